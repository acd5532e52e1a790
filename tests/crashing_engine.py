"""A native engine that dies of a real SIGSEGV (a read of address 0 in C) when it reaches the variant named in
YARN_CLI_TEST_CRASH_ON, as llama.cpp's AMX path does on quantized weights: the crash tests run it in a child
process exactly as yarn_cli runs llama.cpp."""

from __future__ import annotations

import ctypes
import os

from yarn_cli.native.engine import NativeEngine


class CrashingEngine(NativeEngine):
    isolated = True

    def _maybe_crash(self, variant) -> None:
        if variant.name == os.environ.get("YARN_CLI_TEST_CRASH_ON"):
            ctypes.string_at(0)

    def score(self, variant, ids, score_from):
        self._maybe_crash(variant)
        return super().score(variant, ids, score_from)

    def generate(self, variant, ids, max_new_tokens):
        self._maybe_crash(variant)
        return super().generate(variant, ids, max_new_tokens)
