"""``per_state`` judging on the local transformers judge (see ``judge_state.py``).

The local judge reads a per-candidate score from its next-token distribution over the digits
(``HFJudge``). Per state, it writes the JSON reply ``{"1": s1, "2": s2, ...}`` itself, one
candidate at a time on one KV cache: at each ``"k": `` the distribution over 0-10 gives
candidate k's expected score (as per_candidate does), the most likely integer is written, and
decoding goes on to the next key — constrained JSON decoding, as a server's guided JSON would
do, so the reply always parses. The written reply is parsed like a server's (the same failure
policy) and kept as the judgement's raw reply.
"""

from __future__ import annotations

import torch

from spark_core.models.judge import HFJudge, Judgement
from spark_core.models.judge_prompt import JudgeItem
from spark_core.models.judge_state import group_states, parse_state_reply, split_tokens
from spark_core.models.judge_state import state_messages as _messages
from spark_core.models.prefix_cache import cache_arg
from spark_core.models.requests import ChatRequest, OnDone


class HFStateJudge:
    def __init__(self, inner: HFJudge):
        self.inner = inner
        self.backend = inner.backend
        self.model_id = inner.model_id

    def _ids(self, text: str) -> list[int]:
        return self.backend.tokenizer(text, add_special_tokens=False).input_ids

    @torch.inference_mode()
    def score_state(self, items: list[JudgeItem]) -> list[Judgement]:
        backend, one = self.backend, self.inner.digit_ids[1]
        prompt = self._ids(backend.prompt_text(ChatRequest(_messages(items), prefill='{"1": ')))
        arg = cache_arg(backend.model)
        cache, feed, written, expected, generated = None, prompt, [], [], 0
        with backend.computing():
            for k in range(1, len(items) + 1):
                # the fragment plus a trailing '1': P(first digit) and P('0' | '1') in one pass
                ids = torch.tensor([feed + [one]], device=backend.device)
                out = backend.model(
                    input_ids=ids, use_cache=True, **({arg: cache} if cache else {})
                )
                cache = getattr(out, arg)
                logits = out.logits[0, -2:].float().cpu()
                value, grade = self.inner._scores_from_logits(logits[:1], logits[1:])[0]
                expected.append(value)
                cache.crop(-1)  # drop the probe "1"
                written.append(int(grade))
                tail = "}" if k == len(items) else f', "{k + 1}": '
                feed = self._ids(f"{written[-1]}{tail}")
                generated += len(feed)
        reply = "{" + ", ".join(f'"{k}": {v}' for k, v in enumerate(written, 1)) + "}"
        parsed = parse_state_reply(reply, len(items))
        prompt_share = split_tokens(len(prompt), len(items))
        completion_share = split_tokens(generated, len(items))
        return [
            Judgement(
                expected[k] if parsed[k] is not None else None,
                "ok" if parsed[k] is not None else "failed",
                reply,
                "" if parsed[k] is not None else f"no score for candidate {k + 1}",
                prompt_share[k],
                completion_share[k],
                method="next_token_state",
                grade=written[k] if parsed[k] is not None else None,
            )
            for k in range(len(items))
        ]

    def score(self, items: list[JudgeItem], on_done: OnDone = None) -> list[Judgement]:
        results: list[Judgement | None] = [None] * len(items)
        for group in group_states(items):
            for i, judgement in zip(
                group, self.score_state([items[i] for i in group]), strict=True
            ):
                results[i] = judgement
                if on_done is not None:
                    on_done(i, judgement)
        return [r for r in results if r is not None]
