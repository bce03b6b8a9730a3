/// The message ids one side of one connection used within the replay window.
///
/// Ids are kept in a dictionary (id → when) for the lookup and in a FIFO in arrival order for the
/// expiry: time only moves forward, so the oldest ids are always at the front and each id is
/// expired exactly once — O(1) amortised per frame, never a scan of the table. The table holds at
/// most `capacity` ids: past it the oldest is forgotten (and counted), so a peer that sends
/// unique ids as fast as it may cannot grow it without bound.
///
/// It lives in the session: a charger that reconnects starts with an empty table (real chargers
/// reuse message ids after a restart, so replay protection is per connection and time-bounded).
package struct ReplayTable {
    let window: Duration
    let capacity: Int
    private var seen: [String: Duration] = [:]
    /// Arrival order; `head` is the oldest entry still in use.
    private var order: [(id: String, at: Duration)] = []
    private var head = 0
    /// Ids forgotten because the table was full (before their window ended).
    package private(set) var evicted = 0

    package init(window: Duration, capacity: Int) {
        self.window = window
        self.capacity = max(1, capacity)
    }

    package var count: Int { seen.count }

    /// Entries the arrival order holds, expired ones not yet given back included (for tests).
    package var storedEntries: Int { order.count }

    /// True when `id` was recorded less than `window` ago.
    package mutating func contains(_ id: String, now: Duration) -> Bool {
        expire(now: now)
        guard let at = seen[id] else { return false }
        return now - at < window
    }

    /// Records `id` as used now; returns true when an older id had to be forgotten to make room.
    @discardableResult
    package mutating func insert(_ id: String, now: Duration) -> Bool {
        expire(now: now)
        var forgotOne = false
        // One lookup: a new id that takes the table past its capacity pushes the oldest out (not itself: it
        // joins the arrival order only below).
        if seen.updateValue(now, forKey: id) == nil, seen.count > capacity {
            removeOldest()
            evicted += 1
            forgotOne = true
        }
        order.append((id, now))
        return forgotOne
    }

    private mutating func expire(now: Duration) {
        while head < order.count, now - order[head].at >= window {
            removeOldest()
        }
    }

    /// Pops the front of the FIFO; the id leaves the dictionary unless it was recorded again since.
    private mutating func removeOldest() {
        // Skip entries superseded by a newer record of the same id.
        while head < order.count {
            let (id, at) = order[head]
            head += 1
            if seen[id] == at {
                seen[id] = nil
                break
            }
        }
        // Give the consumed front back once it is half the array: amortised O(1) (each removal moves at
        // most as many entries as were consumed), and memory proportional to the ids in the window. A
        // quiet charger keeps a handful, not the thousand CALLs of the last day.
        if head >= 16, head * 2 >= order.count {
            order.removeFirst(head)
            head = 0
        }
    }
}
