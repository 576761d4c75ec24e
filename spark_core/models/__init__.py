"""Models, in layers (each imports only those below it; ``lint-imports`` checks it):

- ``registry``: the one model registry of a process (``REGISTRY``), what stages ask for models;
- ``generator`` and ``judge/``: a backend or a scorer behind the response cache and a stage's
  stop rules (``Generator``, ``Judge``);
- ``constrained_actions/`` (a policy step's action chosen among the action names) and
  ``backends`` (the backend a model config names);
- ``hf/`` (local transformers) and ``openai/`` (any OpenAI-compatible server);
- ``through_cache``, ``stop_rules``, ``usage``, ``prices``, ``requests``, ``response_cache``: what
  every call goes through, is limited by, costs, asks and returns.
"""
