"""Work on a stream's chunks in order on a worker thread (the blob cache's hash and write).

Chunks are worked on in the order they were put, the stream is held back only past its
backlog, chunks that came in while the thread worked go over together, and a failure stops
the work exactly after the last chunk that succeeded.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from metahub.serving.inorder import InOrderWorker


class Recorder:
    def __init__(self) -> None:
        self.worked: list[bytes] = []
        self.done: list[bytes] = []
        self.threads: set[int] = set()
        self.release = threading.Event()
        self.release.set()
        self.fail_at: bytes | None = None

    def work(self, chunk: bytes) -> None:
        self.release.wait(10)
        self.threads.add(threading.get_ident())
        if chunk == self.fail_at:
            raise OSError("no space left on device")
        self.worked.append(chunk)


def chunks(count: int, size: int = 10) -> list[bytes]:
    return [bytes([n % 256]) * size + n.to_bytes(4, "big") for n in range(count)]


async def test_every_chunk_is_worked_on_in_order_off_the_event_loop() -> None:
    recorder = Recorder()
    worker = InOrderWorker(recorder.work, recorder.done.append)
    sent = chunks(500)

    for chunk in sent:
        await worker.put(chunk)
    await worker.finish()

    assert recorder.worked == sent
    assert recorder.done == sent
    assert threading.get_ident() not in recorder.threads


async def test_chunks_put_while_the_thread_works_go_over_as_one_batch() -> None:
    recorder = Recorder()
    batches: list[int] = []

    class Counted(InOrderWorker):
        def _work_on(self, batch: list[bytes]) -> tuple[int, Exception | None]:
            batches.append(len(batch))
            return super()._work_on(batch)

    worker = Counted(recorder.work, recorder.done.append)
    recorder.release.clear()  # the thread is busy with the first chunk
    sent = chunks(20)
    for chunk in sent:
        await worker.put(chunk)  # none of these waits: far below the backlog
    recorder.release.set()
    await worker.finish()

    assert batches == [1, 19]
    assert recorder.done == sent


async def test_the_stream_waits_once_its_backlog_is_full() -> None:
    recorder = Recorder()
    worker = InOrderWorker(recorder.work, recorder.done.append, backlog=100)
    recorder.release.clear()
    await worker.put(b"x" * 60)  # on the thread
    await worker.put(b"y" * 60)  # waiting: 60 bytes
    third = asyncio.create_task(worker.put(b"z" * 60))  # 120 bytes waiting: over the backlog
    await asyncio.sleep(0.05)
    assert not third.done()

    recorder.release.set()
    await asyncio.wait_for(third, 5)
    await worker.finish()
    assert recorder.done == [b"x" * 60, b"y" * 60, b"z" * 60]


async def test_a_failure_stops_the_work_right_after_the_last_chunk_that_succeeded() -> None:
    recorder = Recorder()
    worker = InOrderWorker(recorder.work, recorder.done.append)
    sent = chunks(50)
    recorder.fail_at = sent[30]
    recorder.release.clear()
    for chunk in sent[:40]:
        await worker.put(chunk)
    recorder.release.set()

    with pytest.raises(OSError, match="no space"):
        await worker.finish()
    with pytest.raises(OSError, match="no space"):
        await worker.put(sent[40])
    assert recorder.done == sent[:30]
    assert recorder.worked == sent[:30]
    assert worker.running is None
