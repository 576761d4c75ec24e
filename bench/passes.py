"""Every forward pass of a local model, counted by the code that asked for it.

``bench/synthesize.py --passes`` wraps the model's ``forward`` for one run and prints, per call
site (the thought sessions, the candidates' inputs, the judge, the behaviour log-probs, the
final answers), how many passes ran, the tokens they computed (padding included: it costs as
much), and their seconds — where synthesis's arithmetic goes, pass by pass.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from typing import Any

# the code that asked for a pass: the first of these names found on its stack
SITES = (
    ("_decode_inputs", "candidates' inputs"),
    ("thoughts", "thoughts"),
    ("score_states", "judge"),
    ("_score_rows", "judge"),
    ("read_prefix", "prefixes read once"),
    ("completion_logprobs", "behaviour log-probs"),
    ("final_answers", "final answers"),
)


class PassCounter:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0])

    def wrap(self, model: Any) -> None:
        """Count ``model``'s passes from now on (this process, this model object)."""
        forward = model.forward

        def counted(*args: Any, **kwargs: Any) -> Any:
            ids = kwargs.get("input_ids")
            names = set()
            frame = sys._getframe(1)
            while frame is not None:
                names.add(frame.f_code.co_name)
                frame = frame.f_back
            site = next((label for name, label in SITES if name in names), "other")
            kind = "decode" if ids is not None and ids.shape[1] == 1 else "prompt"
            start = time.perf_counter()
            out = forward(*args, **kwargs)
            row = self.rows[site, kind]
            row[0] += 1
            row[1] += ids.numel() if ids is not None else 0
            row[2] += time.perf_counter() - start
            return out

        model.forward = counted

    def lines(self) -> list[str]:
        total = sum(r[2] for r in self.rows.values())
        out = [f"  forward passes: {total:.1f} s"]
        for (site, kind), (n, tokens, seconds) in sorted(
            self.rows.items(), key=lambda item: -item[1][2]
        ):
            out.append(
                f"    {site:<22} {kind:<7} {int(n):4d} passes {int(tokens):6d} tokens "
                f"{seconds:6.1f} s  ({tokens / max(seconds, 1e-9):4.0f} tokens/s)"
            )
        return out
