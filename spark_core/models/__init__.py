"""Model backends: a generator (writes text) and a judge (scores a candidate 0-10), each local
(transformers) or remote (any OpenAI-compatible server), behind an on-disk response cache."""
