"""Commands from the frontend's buttons, applied through the monitor's operations.

Every command gets exactly one reply, `{type: "reply", id, ok, message, error}`: the monitor's
own error text when it rejected the command (then nothing changed), and an error reply too when
handling failed in any other way (out of memory while resizing the history, a bug), so the
frontend is never left waiting. A successful `probe` reply also carries `data`, the probed
text's tokens and features, bounded (`probe_reply`).
"""

from __future__ import annotations

import numbers
from typing import Any

from ..checks import cut
from ..live.subscriptions import Subscription
from .controls import MonitorControls
from .probe_reply import PROBE_TEXT_CHARS, PROBE_TOP, probe_data

# Settings the configure form may change; enabling and selection have their own commands.
FORM_SETTINGS = ("features", "history_size", "top_k", "threshold", "throttle_ms")
COMMANDS = ("configure", "enable", "clear_history", "reset_statistics", "rank", "select",
            "table_rows", "search", "probe")


class CommandError(ValueError):
    """A frontend command that is malformed or was rejected by the monitor."""


class CommandHandler:
    """Applies commands to `monitor` and to the widget's snapshot `subscription`."""

    def __init__(self, monitor: MonitorControls, subscription: Subscription) -> None:
        self.monitor = monitor
        self.subscription = subscription

    def reply(self, content: Any) -> dict[str, Any]:
        """Apply one command and return its reply; never raises."""
        msg_id = content.get("id") if isinstance(content, dict) else None
        try:
            answer = self.handle(content)
        except (ValueError, TypeError) as exc:  # rejected: the monitor's own words
            return _reply(msg_id, False, str(exc))
        except Exception as exc:  # failed while applying: still answer, and say what happened
            return _reply(msg_id, False, f"the kernel failed: {type(exc).__name__}: {exc}")
        if isinstance(answer, tuple):
            return {**_reply(msg_id, True, answer[0]), "data": answer[1]}
        return _reply(msg_id, True, answer)

    def handle(self, content: Any) -> str | tuple[str, dict[str, Any]]:
        """Apply one command; returns a short success message (and the reply's data, for
        `probe`) or raises with the reason (and then nothing changed)."""
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            raise CommandError(f"a command must be an object with a 'type', got {content!r}")
        kind = content["type"]
        if kind not in COMMANDS:
            raise CommandError(f"unknown command {kind!r}")
        return getattr(self, f"_{kind}")(content)

    def _configure(self, content: dict) -> str:
        changes = content.get("changes")
        if not isinstance(changes, dict) or not changes:
            raise CommandError(f"configure needs a non-empty 'changes' object, got {changes!r}")
        unknown = sorted(set(changes) - set(FORM_SETTINGS))
        if unknown:
            raise CommandError(f"configure cannot change {', '.join(unknown)}")
        self.monitor.configure(**changes)
        return "applied " + ", ".join(sorted(changes))

    def _enable(self, content: dict) -> str:
        flag = content.get("enabled")
        if not isinstance(flag, bool):
            raise CommandError(f"enable needs 'enabled': true or false, got {flag!r}")
        self.monitor.enable(flag)
        return "recording" if flag else "paused"

    def _clear_history(self, content: dict) -> str:
        return f"cleared {self.monitor.clear_history()} records"

    def _reset_statistics(self, content: dict) -> str:
        return f"reset statistics of {self.monitor.reset_statistics()} features"

    def _rank(self, content: dict) -> str:
        self.subscription.update(metric=content.get("metric"))
        return f"ranked by {self.subscription.metric}"

    def _select(self, content: dict) -> str:
        features = content.get("features")
        self.monitor.configure(selected=features)
        return f"showing {len(features)} histogram(s)"

    def _table_rows(self, content: dict) -> str:
        rows = content.get("rows")
        if isinstance(rows, numbers.Real) and not isinstance(rows, bool) and rows == int(rows):
            rows = int(rows)
        self.subscription.update(table_rows=rows)
        return f"showing {rows} rows"

    def _search(self, content: dict) -> str:
        self.subscription.update(search=content.get("text"))
        text = self.subscription.search
        return f"searching for {text!r}" if text else "showing all features"

    def _probe(self, content: dict) -> tuple[str, dict[str, Any]]:
        text, feature = content.get("text"), content.get("feature")
        if not isinstance(text, str) or len(text) > PROBE_TEXT_CHARS:
            raise CommandError(f"probe needs a 'text' of at most {PROBE_TEXT_CHARS} characters")
        if feature is not None and (not isinstance(feature, int) or isinstance(feature, bool)):
            raise CommandError(f"probe's 'feature' must be a feature index, got {feature!r}")
        features = None if feature is None else [feature]
        response = self.monitor.probe(text, record=False, features=features, k=PROBE_TOP)
        data = probe_data(response, feature)
        return f"probed {len(response.texts[0].token_ids)} tokens", data


# Replies echo what they answer; bounded, so a huge field cannot make a huge message.
REPLY_TEXT_CHARS = 500
REPLY_ID_CHARS = 64


def _reply(msg_id: Any, ok: bool, text: str) -> dict[str, Any]:
    text = str(cut(text, REPLY_TEXT_CHARS))
    if not (isinstance(msg_id, int) and not isinstance(msg_id, bool) and abs(msg_id) < 2**53
            or isinstance(msg_id, str) and len(msg_id) <= REPLY_ID_CHARS):
        msg_id = None  # not an id this frontend sends: nothing to match the reply to
    return {"type": "reply", "id": msg_id, "ok": ok, "message": text if ok else "",
            "error": None if ok else text}
