import Foundation

/// One transaction as the two versions see it: the charger knows `localId` (the integer the gateway
/// answered its StartTransaction with), the CSMS knows `transactionId` (a UUID the gateway made).
public struct TransactionRecord: Codable, Sendable, Equatable {
    public var localId: Int
    public var transactionId: String
    public var connectorId: Int
    /// The next TransactionEvent's seqNo.
    public var nextSeqNo: Int
    /// seqNo values below this were possibly used: a restart resumes here (see `TransactionBook.restored`).
    public var seqNoCeiling: Int
    public var idToken: String?
    public var idTokenType: String?
    public var remoteStartId: Int?
    /// What the charger's StartTransaction said, to recognise it when the outbox replays it twice.
    public var startKey: String
    public var chargingState: String?
    /// The CSMS answered the Started event.
    public var startAnswered = false
    public var ended: Bool
}

/// A RequestStartTransaction relayed as RemoteStartTransaction, waiting for the charger's StartTransaction.
public struct PendingRemoteStart: Codable, Sendable, Equatable {
    public var remoteStartId: Int
    public var idToken: String
    public var idTokenType: String
    public var connectorId: Int?
}

/// The per-charger state of the 2.0.1 translation, persisted with `StageStore` as `chargers/<id>/north201.json`.
/// Bounded: open transactions (one per connector in practice, at most `maximumTransactions`), the last
/// ended ones (to recognise a replayed StopTransaction), a few pending remote starts.
public struct TransactionBook: Codable, Sendable, Equatable {
    public static let fileName = "north201.json"
    static let maximumTransactions = 32
    static let keptEnded = 8
    static let maximumRemoteStarts = 8
    /// How far ahead of the seqNo in use the persisted ceiling is kept (see `restored`).
    static let seqNoLease = 32

    /// The next integer transaction id given to the charger (never reused).
    public var nextLocalId = 1
    public var transactions: [TransactionRecord] = []
    public var pendingRemoteStarts: [PendingRemoteStart] = []
    /// NotifyEvent eventId and seqNo counters.
    public var nextEventId = 1
    /// The requestId of the last GetLog / UpdateFirmware, for LogStatusNotification / FirmwareStatusNotification.
    public var logRequestId: Int?
    public var firmwareRequestId: Int?
    /// A Reset OnIdle answered Scheduled, waiting for the last transaction to end.
    public var resetOnIdle = false

    public init() {}

    /// The book as read back from disk in a new session: every open transaction continues from its
    /// ceiling, so a seqNo that was sent but whose save a `kill -9` lost is never sent again (a gap is
    /// allowed, a repeat is not).
    public func restored() -> TransactionBook {
        var book = self
        for index in book.transactions.indices where !book.transactions[index].ended {
            book.transactions[index].nextSeqNo = max(book.transactions[index].nextSeqNo, book.transactions[index].seqNoCeiling)
        }
        return book
    }

    public func transaction(localId: Int) -> TransactionRecord? { transactions.last { $0.localId == localId } }
    public func transaction(id: String) -> TransactionRecord? { transactions.last { $0.transactionId == id } }
    public func openTransaction(connectorId: Int) -> TransactionRecord? {
        transactions.last { $0.connectorId == connectorId && !$0.ended }
    }
    public var hasOpenTransaction: Bool { transactions.contains { !$0.ended } }

    /// Starts a transaction (or finds the one a replayed StartTransaction already started).
    mutating func start(connectorId: Int, startKey: String, idToken: String?, idTokenType: String?, remoteStartId: Int?) -> TransactionRecord {
        if let existing = transactions.last(where: { $0.startKey == startKey }) { return existing }
        let record = TransactionRecord(localId: nextLocalId, transactionId: UUID().uuidString.lowercased(), connectorId: connectorId,
                                       nextSeqNo: 0, seqNoCeiling: Self.seqNoLease, idToken: idToken, idTokenType: idTokenType,
                                       remoteStartId: remoteStartId, startKey: startKey, chargingState: nil, ended: false)
        nextLocalId += 1
        transactions.append(record)
        trim()
        return record
    }

    /// The seqNo for the next event of `localId`'s transaction (strictly increasing).
    mutating func takeSeqNo(localId: Int) -> Int? {
        guard let index = transactions.lastIndex(where: { $0.localId == localId }) else { return nil }
        let seqNo = transactions[index].nextSeqNo
        transactions[index].nextSeqNo += 1
        if transactions[index].nextSeqNo + Self.seqNoLease / 2 >= transactions[index].seqNoCeiling {
            transactions[index].seqNoCeiling = transactions[index].nextSeqNo + Self.seqNoLease
        }
        return seqNo
    }

    mutating func update(localId: Int, _ change: (inout TransactionRecord) -> Void) {
        guard let index = transactions.lastIndex(where: { $0.localId == localId }) else { return }
        change(&transactions[index])
        trim()
    }

    mutating func addRemoteStart(_ start: PendingRemoteStart) {
        pendingRemoteStarts.append(start)
        if pendingRemoteStarts.count > Self.maximumRemoteStarts { pendingRemoteStarts.removeFirst(pendingRemoteStarts.count - Self.maximumRemoteStarts) }
    }

    /// The remote start a StartTransaction answers: same idTag, and the connector asked for (if any).
    mutating func takeRemoteStart(idTag: String?, connectorId: Int) -> PendingRemoteStart? {
        guard let index = pendingRemoteStarts.firstIndex(where: { $0.idToken == idTag && ($0.connectorId == nil || $0.connectorId == connectorId) })
        else { return nil }
        return pendingRemoteStarts.remove(at: index)
    }

    mutating func takeEventId() -> Int {
        defer { nextEventId = nextEventId == Int(Int32.max) ? 1 : nextEventId + 1 }
        return nextEventId
    }

    /// Drops the oldest ended transactions beyond `keptEnded`, and the oldest ones beyond `maximumTransactions`.
    private mutating func trim() {
        var endedCount = transactions.count { $0.ended }
        var index = 0
        while endedCount > Self.keptEnded, index < transactions.count {
            if transactions[index].ended {
                transactions.remove(at: index)
                endedCount -= 1
            } else {
                index += 1
            }
        }
        if transactions.count > Self.maximumTransactions { transactions.removeFirst(transactions.count - Self.maximumTransactions) }
    }
}
