"""Serving library behind the Ray Serve app (:mod:`raypipe.serve.app`); every module but ``app`` is free of Ray Serve.

* :mod:`raypipe.serve.artifacts`: find and load what a trained pipeline left on disk (the sequence
  model of a run directory, its item index, item popularity and attributes, the CDIM matcher and its
  index over the pre-trained items);
* :mod:`raypipe.serve.schemas`: request/response models of the HTTP API (pydantic) and the app args;
* :mod:`raypipe.serve.errors`: 4xx JSON for every bad request, request-body size limit;
* :mod:`raypipe.serve.encoder`: item-id histories → user vectors (unknown ids skipped and reported);
* :mod:`raypipe.serve.catalogue`: the ANN retriever (one hnswlib graph per domain), popularity fallback,
  item lookups, live onboarded items;
* :mod:`raypipe.serve.onboarding`: the CDIM matcher (text → nearest pre-trained items → generated ID
  embedding, IDP eq. 8–9) and the append-only log through which onboarded items reach every replica;
* :mod:`raypipe.serve.replicas`: find (and, for fault tests, kill) the replica actors of a deployment.

Everything here runs and is tested without Ray Serve; the deployments only wrap these classes.
"""
