"""The recommender app's former import path, kept working (``serve_apps.recommender:build_app``, needing
``PYTHONPATH=$PWD``): the app lives in the package, :mod:`raypipe.serve.app`
(``serve run raypipe.serve.app:build_app ...``, no ``PYTHONPATH``)."""
from raypipe.serve.app import *  # noqa: F401,F403 -- the same deployments, defined in raypipe.serve.app
from raypipe.serve.app import build_app  # noqa: F401
