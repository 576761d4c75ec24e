"""The OpenAI-compatible backend (OpenAI, vLLM, TGI, ``transformers serve``) and what an
endpoint can do for a judge (logprobs, structured output)."""
