"""The local transformers backend: shared weights, KV-cache helpers, batched generation, and a
synthesis step's thoughts and inputs on kept KV sessions."""
