"""One guarded call into math-verify (``from math_verify import parse, verify``).

math-verify can hang on adversarial input (e.g. ``\\boxed{9^{9^{9^{9}}}}`` makes sympy try to
evaluate a power tower). Its own timeouts use SIGALRM, which only works on the main thread,
and passing a timeout from any other thread makes it raise. So:
- on the main thread, its timeouts are on (``timeout_s`` per parse and per comparison);
- on any other thread they must be off; then answers longer than ``max_chars`` or that look
  explosive (nested powers, huge exponents or factorials) count as wrong without calling it,
  and the scorer's per-call timeout (rewards.timeout_s) is the last line of defence.
The scorer runs the math built-ins on the caller's thread when that is the main thread
(see registry.SELF_TIMED_ATTR), so the first case is the normal one.
"""

from __future__ import annotations

import re
import threading

_EXPLOSIVE_RE = re.compile(
    r"\^\s*\{[^{}]*\^"  # a power inside a braced exponent: 9^{9^{...}}
    r"|\^\s*\(?\s*[\w.]+\s*\^"  # chained powers: 9^9^9
    r"|\*\*\s*\(?\s*[\w.]+\s*\*\*"  # chained powers: 9**9**9
    r"|(?:\^|\*\*)\s*[{(]?\s*\d{4,}"  # an exponent of 4+ digits
    r"|\d{3,}\s*!"  # a factorial of 3+ digits
)


def looks_explosive(text: str) -> bool:
    """Heuristic for answers sympy may take forever to evaluate (used only without timeouts)."""
    return bool(_EXPLOSIVE_RE.search(text))


def math_equal(gold: str, pred: str, timeout_s: int = 5, max_chars: int = 1000) -> bool:
    """True when math-verify finds ``pred`` equivalent to the reference ``gold``."""
    on_main = threading.current_thread() is threading.main_thread()
    if not on_main and (len(pred) > max_chars or looks_explosive(pred)):
        return False
    from math_verify import parse, verify  # lazy: importing sympy costs ~0.5 s

    timeout = max(1, int(timeout_s)) if on_main else None
    gold_parsed = parse(gold, parsing_timeout=timeout)
    pred_parsed = parse(pred, parsing_timeout=timeout)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))
