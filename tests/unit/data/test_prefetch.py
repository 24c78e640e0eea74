"""data_pipeline/loading/prefetch.py: work done ahead on threads, handed over in order."""
import threading
import time

import pytest

from data_pipeline.loading.prefetch import prefetched


def test_results_come_in_order_while_several_run_at_once():
    running, peak = [0], [0]
    lock = threading.Lock()

    def slow(i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02 * (5 - i % 5))                 # later items finish first
        with lock:
            running[0] -= 1
        return i * i

    assert list(prefetched(slow, range(12), threads=3)) == [i * i for i in range(12)]
    assert peak[0] == 3


def test_an_error_reaches_the_consumer_and_an_abandoned_stream_stops():
    def fail(i):
        if i == 2:
            raise ValueError("bad sample 2")
        return i

    with pytest.raises(ValueError, match="bad sample 2"):
        list(prefetched(fail, range(5), threads=2))
    done = []
    stream = prefetched(lambda i: done.append(i) or i, range(1000), threads=2, depth=4)
    assert next(stream) == 0
    stream.close()
    assert len(done) <= 6                              # the first item and a bounded look-ahead
