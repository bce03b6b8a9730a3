/// The publisher's bound on messages handed to libmosquitto and not yet acknowledged, kept exact
/// under concurrent publishers and libmosquitto's network thread.
///
/// A publish first *reserves* a place (so two publishers cannot both take the last one), then
/// `commit`s the message id libmosquitto gave it, or `cancel`s when libmosquitto refused it. An
/// acknowledgement (PUBACK/PUBCOMP, `on_publish`) can arrive on the network thread before the
/// publishing thread has committed its id: it is remembered as early and settles the place at the
/// commit, so no id is left behind as a stale entry that would shrink the queue for good.
///
/// Not thread-safe by itself: the publisher keeps it in a `Mutex`.
package struct MQTTQueueAccounting: Sendable {
    package let limit: Int
    /// QoS 0 messages are never acknowledged by the broker: they take no place after their publish.
    package let tracksAcknowledgements: Bool
    private var inFlight: Set<Int32> = []
    private var reserved = 0
    /// Acknowledgements for ids not committed yet; only while a reservation is open (at most `reserved` of them).
    private var early: Set<Int32> = []
    package private(set) var acknowledged = 0
    package private(set) var dropped = 0
    /// The most places ever taken at once (never above `limit`).
    package private(set) var peak = 0

    package init(limit: Int, tracksAcknowledgements: Bool) {
        self.limit = max(1, limit)
        self.tracksAcknowledgements = tracksAcknowledgements
    }

    /// Places taken: messages awaiting their acknowledgement, and publishes under way.
    package var occupied: Int { inFlight.count + reserved }
    package var awaitingAcknowledgement: Int { inFlight.count }

    /// Takes a place for a publish; false (counted as dropped) when the queue is full.
    package mutating func reserve() -> Bool {
        guard occupied < limit else {
            dropped += 1
            return false
        }
        reserved += 1
        peak = max(peak, occupied)
        return true
    }

    /// libmosquitto refused the message: the place is given back, the message counted as dropped.
    package mutating func cancel() {
        precondition(reserved > 0, "cancel without a reservation")
        reserved -= 1
        dropped += 1
        if reserved == 0 { early.removeAll() }
    }

    /// libmosquitto took the message under `mid`; it holds its place until acknowledged.
    package mutating func commit(mid: Int32) {
        precondition(reserved > 0, "commit without a reservation")
        reserved -= 1
        if !tracksAcknowledgements {
            early.remove(mid)
        } else if early.remove(mid) != nil {
            acknowledged += 1
        } else {
            inFlight.insert(mid)
        }
        if reserved == 0 { early.removeAll() }
    }

    /// The broker acknowledged `mid`; true when it settled a message of ours.
    package mutating func acknowledge(mid: Int32) -> Bool {
        guard tracksAcknowledgements else { return false }
        if inFlight.remove(mid) != nil {
            acknowledged += 1
            return true
        }
        // Its publisher has not committed the id yet (or it is not ours): settle it at the commit.
        if reserved > early.count { early.insert(mid) }
        return false
    }
}
