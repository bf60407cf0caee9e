"""A stand-in for the engine's bus reader thread: the test puts events in its queue."""

import queue


class FakeReader:
    def __init__(self, events=()):
        self.events = queue.Queue()
        for event in events:
            self.events.put(event)
        self.overflowed = 0
        self.failure = None
        self.alive = True

    def start(self):
        pass

    def stop(self):
        pass

    def is_alive(self):
        return self.alive

    def die(self, failure):
        """What a real reader does when its subscription fails."""
        self.failure = failure
        self.alive = False


def feed(relay, events):
    """Bus events through the engine loop into its journal (the forwarder is not run here)."""
    for event in events:
        relay.reader.events.put(event)
    while not relay.reader.events.empty():
        relay.step()
    relay.flush()
