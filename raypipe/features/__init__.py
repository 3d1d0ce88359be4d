"""Item feature extraction: frozen encoders, the Ray Data pipeline and the feature store."""
