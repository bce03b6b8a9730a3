import StageKit

/// The CALLs travelling towards one peer: at most one in flight (OCPP-J's rule), the rest
/// waiting their turn in arrival order, whether they come from the other peer or from a stage.
struct CallLane {
    enum Origin {
        /// Sent by the other peer; the answer is run through the stages and forwarded.
        case relayed
        /// Sent by a stage; the answer goes back to it and no further.
        case gateway((CallOutcome) -> Void)
    }

    struct Call {
        let id: String
        let action: String
        let bytes: [UInt8]
        let origin: Origin
    }

    let timeout: Duration
    let limit: Int
    /// Pacing set by a stage: CALLs at least this far apart, and none before `notBefore`.
    var minimumInterval: Duration?
    var notBefore: Duration?
    var lastSentAt: Duration?
    /// A pump is already scheduled for when pacing allows the next CALL.
    var pacingTimerArmed = false
    private(set) var inFlight: Call?
    /// When the in-flight CALL times out (the session's clock); its timer is the session's one sweep.
    private(set) var deadline: Duration?
    private var waiting: [Call] = []

    init(timeout: Duration, limit: Int) {
        self.timeout = timeout
        self.limit = limit
    }

    var queuedCount: Int { waiting.count }

    /// Adds a CALL; false when the queue is full.
    mutating func enqueue(_ call: Call) -> Bool {
        guard waiting.count < limit else { return false }
        waiting.append(call)
        return true
    }

    /// When pacing allows the next CALL, if later than `now`.
    func pacedUntil(now: Duration) -> Duration? {
        var earliest = notBefore ?? now
        if let minimumInterval, let lastSentAt { earliest = max(earliest, lastSentAt + minimumInterval) }
        return earliest > now ? earliest : nil
    }

    enum Turn {
        /// Nothing to send: a CALL in flight, none waiting, or the pacing timer is already armed.
        case wait
        /// Pacing holds the next CALL until then: the caller arms the timer (`pacingTimerArmed` is set).
        case pacedUntil(Duration)
        /// Send `call` now; it times out at `deadline`.
        case send(Call, deadline: Duration)
    }

    /// `takeTurn(now:)` reading the clock only when the lane has something to send (`now` is zero otherwise):
    /// the session's pump makes one access to the lane per turn.
    mutating func takeTurn(clock: () -> Duration) -> (turn: Turn, now: Duration) {
        guard inFlight == nil, !waiting.isEmpty else { return (.wait, .zero) }
        let now = clock()
        return (takeTurn(now: now), now)
    }

    /// The lane's next step at `now`: wait, wait for pacing, or take the next CALL in flight.
    mutating func takeTurn(now: Duration) -> Turn {
        guard inFlight == nil, !waiting.isEmpty else { return .wait }
        if let until = pacedUntil(now: now) {
            guard !pacingTimerArmed else { return .wait }
            pacingTimerArmed = true
            return .pacedUntil(until)
        }
        lastSentAt = now
        // The usual queue holds one CALL: taking the last is cheaper than shifting the array.
        let call = waiting.count == 1 ? waiting.removeLast() : waiting.removeFirst()
        inFlight = call
        let deadline = now + timeout
        self.deadline = deadline
        return .send(call, deadline: deadline)
    }

    /// The in-flight CALL if its deadline has passed at `now`.
    func expired(at now: Duration) -> Call? {
        guard let inFlight, let deadline, deadline <= now else { return nil }
        return inFlight
    }

    /// Takes the in-flight CALL if `id` answers it.
    mutating func complete(id: String) -> Call? {
        guard let call = inFlight, call.id == id else { return nil }
        inFlight = nil
        deadline = nil
        return call
    }

    /// Takes the CALLs relayed from the other peer (in flight and waiting, oldest first) and the
    /// gateway's in-flight CALL, if any; the gateway's waiting CALLs stay for later.
    mutating func takeForLinkLoss() -> (relayed: [Call], gatewayInFlight: Call?) {
        deadline = nil
        var relayed: [Call] = []
        var gatewayInFlight: Call?
        if let call = inFlight {
            if case .relayed = call.origin { relayed.append(call) } else { gatewayInFlight = call }
        }
        inFlight = nil
        relayed += waiting.filter { if case .relayed = $0.origin { true } else { false } }
        waiting.removeAll { if case .relayed = $0.origin { true } else { false } }
        return (relayed, gatewayInFlight)
    }

    /// Empties the lane, returning everything that was in it.
    mutating func drain() -> [Call] {
        deadline = nil
        let all = (inFlight.map { [$0] } ?? []) + waiting
        inFlight = nil
        waiting = []
        return all
    }
}
