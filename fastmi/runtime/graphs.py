"""CUDA graph capture of a step, shared by the GPU checks and the benchmarks."""

from __future__ import annotations

from typing import Callable

import torch


def capture_graph(body: Callable, warmup_calls: int = 3):
    """``(graph, static)``: ``body`` warmed up on a side stream (its lazy allocations and
    first-call work stay out of the graph), then captured in a CUDA graph whose replays
    rewrite ``static``, the outputs of the captured call."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup_calls):
            body()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static = body()
    return graph, static
