"""One-shot search: a weight-sharing supernet over a space (:mod:`nas.supernet.model`), its training
(:mod:`nas.supernet.train`) and the scoring of candidates with its weights (:mod:`nas.supernet.score`)."""
