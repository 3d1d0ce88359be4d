"""Recommender models sharing one small surface (:class:`raypipe.models.base.SequentialRecommender`)."""
