"""Per-destination slot accounting for webhook POSTs in this replica.

A *destination* is a webhook endpoint (its id) or a settings/account URL.
Every POST holds one slot of its destination (at most
``webhook_endpoint_concurrency``) and one of the replica (at most
``webhook_concurrency``).  Slots are taken *before* a delivery is claimed in
the database, so a claimed delivery is POSTed at once rather than waiting in a
local queue where its claim could lapse: a slow destination fills only its own
slots, and its surplus stays unclaimed in the database for later.  (The one
exception, main.py's claims "ahead", is bounded to one quick POST's wait and
checked against the claim before use.)

Destinations with deliveries stored but not claimed (``spilled``) are refilled
round-robin as slots free up.
"""

from __future__ import annotations

from collections import OrderedDict


class Lanes:
    def __init__(self, per_destination: int, total: int) -> None:
        self.per_destination = per_destination
        self.total = total
        self.in_flight: dict[str, int] = {}
        self.busy = 0
        # Destinations with unclaimed due deliveries this replica stored (insertion
        # order = round-robin order).
        self.spilled: OrderedDict[str, None] = OrderedDict()

    def room(self, dest: str) -> int:
        return max(0, min(self.per_destination - self.in_flight.get(dest, 0), self.total - self.busy))

    def free(self) -> int:
        return max(0, self.total - self.busy)

    def take(self, dest: str, n: int = 1) -> None:
        if n:
            self.in_flight[dest] = self.in_flight.get(dest, 0) + n
            self.busy += n

    def give_back(self, dest: str, n: int = 1) -> None:
        if not n:
            return
        left = self.in_flight[dest] - n
        if left:
            self.in_flight[dest] = left
        else:
            del self.in_flight[dest]
        self.busy -= n

    def spill(self, dest: str) -> None:
        self.spilled[dest] = None

    def drained(self, dest: str) -> None:
        self.spilled.pop(dest, None)

    def refillable(self, batch: int) -> list[tuple[str, int]]:
        """Spilled destinations to refill now and how many slots each gets.

        A destination is refilled once it has ``batch`` free slots (or nothing
        in flight), so one claim statement serves several POSTs.
        """
        out: list[tuple[str, int]] = []
        free = self.free()
        for dest in list(self.spilled):
            if free <= 0:
                break
            room = min(self.room(dest), free)
            if room >= batch or (room > 0 and dest not in self.in_flight):
                out.append((dest, room))
                free -= room
                # Round robin: the next pump starts with the others.
                self.spilled.move_to_end(dest)
        return out
