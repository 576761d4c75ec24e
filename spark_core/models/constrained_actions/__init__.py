"""Constrained action decoding: a policy step's action is chosen among the action names
(the configured tools, ``cot`` and ``answer``), never parsed from free text.

- ``scoring``: the exact distribution P(action | state) on a local model — every name scored
  as a continuation of the state ``...Action:``, one forward pass plus forks of its KV cache.
- ``hf_steps``: a whole step (thought -> scored action -> input) in one KV session.
- ``openai_steps``: a step on an OpenAI-compatible server (guided choice, a JSON-schema enum,
  or free text parsed by the protocol's parser), with the distribution read from logprobs.

``generator.Generator.policy_steps`` runs either, through the response cache; the request and
result types are ``requests.StepRequest`` and ``requests.PolicyStep``.
"""
