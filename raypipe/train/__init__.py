"""The single Ray Train loop (:mod:`raypipe.train.loop`) and the driver around it (:mod:`raypipe.train.run`)."""
