"""Micro-batching: requests that arrive together share one forward pass.

A :class:`MicroBatcher` takes items one request at a time (:meth:`MicroBatcher.put`). Its collector
waits for a free batch thread, takes the first queued item, then waits up to ``wait_s`` (a few
milliseconds) for company, up to ``max_size`` items, and runs the batch in one call of ``run`` on a
worker thread, as Ray Serve's ``@serve.batch`` and TensorFlow Serving's batching do. It waits only
when ``expect_company()`` says other requests are being served, so a lone request is not delayed. Up to
``concurrency`` batches run at once (one per CPU suits LiteRT's single-threaded interpreters), and the
next batch gathers while they run, so under load batches fill up by themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True)
class BatchStats:
    """What a batcher has done: batches run (one call of ``run`` each), items in them, the largest batch."""

    batches: int = 0
    items: int = 0
    largest: int = 0

    def after(self, size: int) -> BatchStats:
        """These counts with one more batch of ``size`` items."""
        return BatchStats(self.batches + 1, self.items + size, max(self.largest, size))


class MicroBatcher(Generic[Item, Result]):
    """Gathers items submitted concurrently into batches for ``run`` (one result per item, in order).

    ``expect_company()`` (default: always) says whether more items may come soon.

    Start it with :meth:`start` inside the event loop that will put items, stop it with :meth:`close`.
    """

    def __init__(
        self,
        run: Callable[[Sequence[Item]], Sequence[Result]],
        *,
        max_size: int,
        wait_s: float,
        concurrency: int,
        expect_company: Callable[[], bool] = lambda: True,
    ):
        if max_size < 1 or concurrency < 1 or wait_s < 0:
            raise ValueError("max_size and concurrency must be at least 1 and wait_s not negative")
        self._run, self._max_size, self._wait_s = run, max_size, wait_s
        self._concurrency, self._expect_company = concurrency, expect_company
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]]] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._collector: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self.stats = BatchStats()

    async def start(self) -> None:
        """Start collecting (in the running event loop)."""
        self._queue, self._slots = asyncio.Queue(), asyncio.Semaphore(self._concurrency)
        self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="clothclf-batch")
        self._collector = asyncio.create_task(self._collect())

    def put(self, item: Item) -> asyncio.Future[Result]:
        """Queue ``item`` now; the future of its result, computed in a batch with the items queued
        about the same time."""
        if self._queue is None or self._collector is None or self._collector.done():
            raise RuntimeError("the batcher is not running")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return future

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            batch = [await self._queue.get()]
            deadline = loop.time() + self._wait_s
            while len(batch) < self._max_size:
                if self._queue.empty() and (left := deadline - loop.time()) > 0 and self._expect_company():
                    try:
                        batch.append(await asyncio.wait_for(self._queue.get(), left))
                    except TimeoutError:
                        break
                elif not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                else:
                    break
            task = asyncio.create_task(self._run_batch(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run_batch(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            items = [item for item, _ in batch]
            results = await asyncio.get_running_loop().run_in_executor(self._pool, self._run, items)
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} items gave {len(results)} results")
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
        except Exception as exc:  # every waiter gets the failure instead of hanging
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        finally:
            self.stats = self.stats.after(len(batch))
            self._slots.release()

    async def close(self) -> None:
        """Run what is queued, wait for the running batches, then stop."""
        if self._collector is None:
            return
        while not self._queue.empty() or self._running:
            await asyncio.sleep(0.01)
        self._collector.cancel()
        await asyncio.gather(self._collector, return_exceptions=True)
        self._pool.shutdown(wait=True)
