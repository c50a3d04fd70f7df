"""OpenAI ``stop`` strings: cut a finished text, or filter a stream of pieces as they arrive."""

from __future__ import annotations


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """Text before the earliest stop string, and whether one was found.

    'Hello\\nWorld', ['\\n'] -> ('Hello', True); 'Hi', ['\\n'] -> ('Hi', False)
    """
    hits = [text.find(s) for s in stops if s in text]
    return (text[: min(hits)], True) if hits else (text, False)


class StopStringFilter:
    """Passes streamed text through, holding back any tail that could begin a stop string.

    f = StopStringFilter(["END"])
    f.feed("abcE") -> "abc";  f.feed("ND tail") -> "";  f.stopped -> True
    """

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.held = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """The part of ``held + piece`` that is safe to send now."""
        if self.stopped or not self.stops:
            return "" if self.stopped else piece
        text, self.stopped = cut_at_stop(self.held + piece, self.stops)
        keep = 0 if self.stopped else self._partial_stop_length(text)
        self.held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """What is still held when the stream ends without a stop string."""
        held, self.held = self.held, ""
        return "" if self.stopped else held

    def _partial_stop_length(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        longest = max(len(s) for s in self.stops) - 1
        for n in range(min(longest, len(text)), 0, -1):
            if any(s.startswith(text[-n:]) for s in self.stops):
                return n
        return 0
