import Foundation
import GRDB
import OCPP
import Synchronization

/// What a queued CALL is, for the quota rules: transaction messages are never dropped, periodic
/// telemetry is thinned first.
public enum MessageKind: String, Sendable, CaseIterable, Codable {
    /// StartTransaction, StopTransaction, MeterValues with a transactionId (OCPP 1.6 §3.7).
    case transaction
    /// StatusNotification (coalesced to the latest per connector).
    case status
    /// MeterValues without a transactionId (periodic or clock-aligned, no transaction).
    case telemetry
    /// BootNotification and the other notifications (firmware, diagnostics, security events).
    case other
}

/// A CALL waiting in (or failed out of) a charger's outbox.
public struct QueuedMessage: Sendable, Equatable {
    public enum State: String, Sendable { case pending, failed }
    public var seq: Int64
    public var action: String
    /// The payload as the charger sent it (raw JSON bytes).
    public var payload: [UInt8]
    public var kind: MessageKind
    public var connector: Int?
    /// For StartTransaction the id the gateway gave the charger; for StopTransaction/MeterValues the id the charger used.
    public var localTransactionId: Int?
    /// Seconds since 1970.
    public var enqueuedAt: Double
    public var attempts: Int
    public var lastError: String?
    public var state: State
}

/// A CALL to append.
public struct NewMessage: Sendable {
    public var action: String
    public var payload: [UInt8]
    public var kind: MessageKind
    public var connector: Int?
    public var transactionId: Int?
    public var enqueuedAt: Double

    public init(action: String, payload: [UInt8], kind: MessageKind, connector: Int? = nil, transactionId: Int? = nil,
                enqueuedAt: Double) {
        self.action = action
        self.payload = payload
        self.kind = kind
        self.connector = connector
        self.transactionId = transactionId
        self.enqueuedAt = enqueuedAt
    }
}

/// The bounds of one charger's outbox (and of all of them together).
public struct OutboxLimits: Sendable, Equatable {
    public var maxBytesPerCharger: Int
    public var maxBytesTotal: Int
    /// Failed rows kept for inspection (`ocpp-gateway outbox show`); older ones are removed.
    public var maxFailedRows: Int
    public var authCacheSize: Int
    public var maxLocalListEntries: Int
    /// The first transaction id the gateway gives out itself; ids from here to `Int32.max` are the gateway's.
    public var localTransactionIdBase: Int

    public static let defaultMaxBytesPerCharger = 16 * 1_048_576
    public static let defaultMaxBytesTotal = 256 * 1_048_576
    public static let defaultLocalTransactionIdBase = 2_000_000_000

    public init(maxBytesPerCharger: Int = defaultMaxBytesPerCharger, maxBytesTotal: Int = defaultMaxBytesTotal,
                maxFailedRows: Int = 1000, authCacheSize: Int = 1000, maxLocalListEntries: Int = 10_000,
                localTransactionIdBase: Int = defaultLocalTransactionIdBase) {
        self.maxBytesPerCharger = maxBytesPerCharger
        self.maxBytesTotal = maxBytesTotal
        self.maxFailedRows = maxFailedRows
        self.authCacheSize = authCacheSize
        self.maxLocalListEntries = maxLocalListEntries
        self.localTransactionIdBase = localTransactionIdBase
    }
}

/// What `append` did.
public struct AppendResult: Sendable, Equatable {
    /// nil when the new message itself had to be dropped (quota; never a transaction message).
    public var seq: Int64?
    /// For a StartTransaction: the transaction id the gateway made.
    public var localTransactionId: Int?
    /// Rows removed to make room or by coalescing: (kind, reason) with reason `quota` or `coalesced`.
    public var dropped: [Dropped]
    public var figures: OutboxFigures

    public struct Dropped: Sendable, Equatable {
        public var kind: MessageKind
        public var reason: String
    }
}

/// One charger's outbox at a glance.
public struct OutboxFigures: Sendable, Equatable {
    /// Pending rows.
    public var depth: Int
    public var failed: Int
    /// Payload bytes of every row (pending and failed).
    public var bytes: Int
    /// The enqueue time of the oldest pending row (seconds since 1970).
    public var oldest: Double?
    public init(depth: Int = 0, failed: Int = 0, bytes: Int = 0, oldest: Double? = nil) {
        self.depth = depth
        self.failed = failed
        self.bytes = bytes
        self.oldest = oldest
    }
}

/// An idTagInfo (OCPP 1.6): status Accepted | Blocked | Expired | Invalid | ConcurrentTx.
public struct IdTagInfo: Sendable, Equatable {
    public var status: String
    public var expiryDate: String?
    public var parentIdTag: String?
    public init(status: String, expiryDate: String? = nil, parentIdTag: String? = nil) {
        self.status = status
        self.expiryDate = expiryDate
        self.parentIdTag = parentIdTag
    }
}

/// How an idTag nobody knows is treated while the CSMS is away (`offline_authorize`).
public enum OfflineAuthorizePolicy: String, Sendable, Decodable, CaseIterable {
    /// Nothing is authorized offline, not even cached or listed tags (LocalAuthorizeOffline = false).
    case reject
    /// The local list and the cache decide; unknown tags are refused (Invalid).
    case cacheOnly = "cache_only"
    /// The local list and the cache decide; unknown tags are accepted (AllowOfflineTxForUnknownId = true).
    case accept
}

/// A transaction the gateway numbered while the CSMS was away, and the id the CSMS gave it on replay.
public struct TransactionMapping: Sendable, Equatable {
    public var localId: Int
    /// nil when the CSMS refused the StartTransaction (CALLERROR): its later messages fail too.
    public var csmsId: Int?
    public init(localId: Int, csmsId: Int?) {
        self.localId = localId
        self.csmsId = csmsId
    }
}

/// One charger's durable outbox: a SQLite file (`state_dir/chargers/<id>/outbox.sqlite`, WAL,
/// `synchronous=FULL`, created 0600) with the queued CALLs, the transaction id map, the
/// authorization cache and the local list.
///
/// Every method blocks on disk: call them off the event loop (`submit` runs work on this charger's
/// own serial queue, in the order it was handed over).
public final class OutboxDatabase: Sendable {
    public let path: String
    private let dbQueue: DatabaseQueue
    private let work: DispatchQueue
    private let limitsInForce: Mutex<OutboxLimits>
    private var limits: OutboxLimits { limitsInForce.withLock { $0 } }
    /// Payload bytes and row counts, kept in memory so that an append never scans the table. Changed only
    /// after the commit that changed the rows succeeded.
    private let counters = Mutex(Counters())

    private struct Counters {
        var bytes = 0
        var pending = 0
        var failed = 0
        mutating func remove(state: String, size: Int) {
            bytes -= size
            if state == "failed" { failed -= 1 } else { pending -= 1 }
        }
        mutating func apply(_ delta: Counters) {
            bytes += delta.bytes
            pending += delta.pending
            failed += delta.failed
        }
    }
    /// Every open outbox of the process, so the total quota can be enforced.
    private static let open = Mutex<[String: OutboxDatabase]>([:])

    /// The file of a charger's outbox.
    public static func path(stateDirectory: String, chargerId: String) -> String {
        stateDirectory + "/chargers/" + chargerId + "/outbox.sqlite"
    }

    /// The outbox of `path`, opened once per process (a reload's new stage instance shares it, so the
    /// order of writes holds across instances).
    public static func shared(path: String, limits: OutboxLimits) throws -> OutboxDatabase {
        if let existing = open.withLock({ $0[path] }) {
            existing.limitsInForce.withLock { $0 = limits }  // a reload may have changed them
            return existing
        }
        let database = try OutboxDatabase(path: path, limits: limits)
        return open.withLock { opened in
            if let existing = opened[path] { return existing }
            opened[path] = database
            return database
        }
    }

    /// The outbox of `path` if this process has it open (tests wait for its queue; nothing is opened).
    public static func ifOpen(path: String) -> OutboxDatabase? {
        open.withLock { $0[path] }
    }

    /// Payload bytes of every outbox this process has open.
    public static var totalBytes: Int {
        open.withLock { $0.values.reduce(0) { $0 + $1.counters.withLock { $0.bytes } } }
    }

    /// Opens (creating, 0600 from the first byte, in a 0700 folder) the outbox at `path`.
    /// `readOnly` opens an existing file for inspection (the CLI).
    public init(path: String, limits: OutboxLimits = OutboxLimits(), readOnly: Bool = false) throws {
        self.path = path
        limitsInForce = Mutex(limits)
        work = DispatchQueue(label: "ocpp-gateway.outbox")
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        if readOnly {
            configuration.readonly = true
        } else {
            let folder = (path as NSString).deletingLastPathComponent
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
            let descriptor = Foundation.open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
            guard descriptor >= 0 else { throw OutboxError("cannot create \(path): \(String(cString: strerror(errno)))") }
            close(descriptor)
            configuration.journalMode = .wal
            configuration.prepareDatabase { db in
                // Every commit is on disk before it returns: an acknowledged message survives kill -9 and power loss.
                try db.execute(sql: "PRAGMA synchronous = FULL")
            }
        }
        dbQueue = try DatabaseQueue(path: path, configuration: configuration)
        if !readOnly { try Self.migrator.migrate(dbQueue) }
        let row = try dbQueue.read { db in
            try Row.fetchOne(db, sql: """
                SELECT COALESCE(SUM(LENGTH(payload)), 0) AS bytes, COALESCE(SUM(state = 'pending'), 0) AS pending,
                       COALESCE(SUM(state = 'failed'), 0) AS failed FROM queue
                """)
        }
        counters.withLock { $0 = Counters(bytes: row?["bytes"] ?? 0, pending: row?["pending"] ?? 0, failed: row?["failed"] ?? 0) }
    }

    private static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE queue (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    action TEXT NOT NULL,
                    payload BLOB NOT NULL,
                    kind TEXT NOT NULL,
                    connector INTEGER,
                    local_transaction_id INTEGER,
                    enqueued_at REAL NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    last_error TEXT,
                    state TEXT NOT NULL DEFAULT 'pending'
                );
                CREATE INDEX queue_by_state ON queue(state, seq);
                CREATE TABLE transaction_map (
                    local_id INTEGER PRIMARY KEY,
                    csms_id INTEGER,
                    created_at REAL NOT NULL
                );
                CREATE TABLE auth_cache (
                    id_tag TEXT PRIMARY KEY,
                    status TEXT NOT NULL,
                    expiry_date TEXT,
                    parent_id_tag TEXT,
                    updated_at REAL NOT NULL
                );
                CREATE TABLE local_list (
                    id_tag TEXT PRIMARY KEY,
                    status TEXT NOT NULL,
                    expiry_date TEXT,
                    parent_id_tag TEXT
                );
                CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                """)
        }
        return migrator
    }

    // MARK: Off the event loop

    /// Runs `body` on this outbox's serial queue (in submission order) and hands its result to `completion` there.
    public func submit<T: Sendable>(_ body: @escaping @Sendable (OutboxDatabase) throws -> T,
                                    completion: @escaping @Sendable (Result<T, any Error>) -> Void) {
        work.async { [self] in
            completion(Result { try body(self) })
        }
    }

    /// Waits until every work item submitted before is done (tests, shutdown).
    public func drainSubmitted() {
        work.sync {}
    }

    // MARK: The queue

    /// Appends a CALL durably (the transaction is on disk when this returns). A StartTransaction gets
    /// the gateway's next transaction id; a StatusNotification replaces the older waiting ones of its
    /// connector; over quota, room is made (failed rows, then every other telemetry sample, then the
    /// oldest telemetry, status and other rows; never transaction messages), and a non-transaction
    /// message that still does not fit is itself dropped.
    public func append(_ message: NewMessage) throws -> AppendResult {
        var delta = Counters()
        var result = try dbQueue.write { db -> AppendResult in
            delta = Counters()
            var dropped: [AppendResult.Dropped] = []
            var freed = 0
            if message.kind == .status, let connector = message.connector {
                let old = try Row.fetchAll(db, sql: """
                    SELECT seq, LENGTH(payload) AS size FROM queue WHERE state = 'pending' AND kind = 'status' AND connector = ?
                    """, arguments: [connector])
                for row in old {
                    try db.execute(sql: "DELETE FROM queue WHERE seq = ?", arguments: [row["seq"] as Int64])
                    freed += row["size"] as Int
                    delta.remove(state: "pending", size: row["size"])
                    dropped.append(.init(kind: .status, reason: "coalesced"))
                }
            }
            var transactionId = message.transactionId
            if message.action == "StartTransaction" {
                let next = try Int.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'next_local_transaction_id'")
                var id = max(next ?? limits.localTransactionIdBase, limits.localTransactionIdBase)
                if id > Int(Int32.max) { id = limits.localTransactionIdBase }  // wraps within the gateway's range
                transactionId = id
                try db.execute(sql: "INSERT OR REPLACE INTO meta(key, value) VALUES ('next_local_transaction_id', ?)", arguments: [id + 1])
            }
            try db.execute(sql: """
                INSERT INTO queue(action, payload, kind, connector, local_transaction_id, enqueued_at) VALUES (?, ?, ?, ?, ?, ?)
                """, arguments: [message.action, Data(message.payload), message.kind.rawValue, message.connector, transactionId,
                                 message.enqueuedAt])
            var seq: Int64? = db.lastInsertedRowID
            let size = message.payload.count
            delta.bytes += size
            delta.pending += 1
            let current = counters.withLock { $0.bytes }
            let mine = current - freed + size
            let others = Self.open.withLock { $0.values.reduce(0) { $1 === self ? $0 : $0 + $1.counters.withLock { $0.bytes } } }
            let over = max(mine - limits.maxBytesPerCharger, others + mine - limits.maxBytesTotal)
            if over > 0 {
                let victims = try makeRoom(db, need: over, newest: seq!, mayDropNewest: message.kind != .transaction, delta: &delta)
                dropped += victims
                if victims.contains(where: { $0.reason == "quota-new" }) {
                    seq = nil
                    dropped = dropped.map { $0.reason == "quota-new" ? .init(kind: $0.kind, reason: "quota") : $0 }
                }
                // Transaction messages may pass the quota, but not without bound: past twice the quota the
                // append is refused (rolled back, so nothing is acknowledged and the charger keeps the message).
                let after = current + delta.bytes
                if message.kind == .transaction,
                   after > 2 * limits.maxBytesPerCharger || others + after > 2 * limits.maxBytesTotal {
                    throw OutboxFull()
                }
            }
            return AppendResult(seq: seq, localTransactionId: message.action == "StartTransaction" && seq != nil ? transactionId : nil,
                                dropped: dropped, figures: OutboxFigures())
        }
        counters.withLock { $0.apply(delta) }
        result.figures = try figures()
        return result
    }

    /// Frees at least `need` bytes; returns what was dropped.
    private func makeRoom(_ db: Database, need: Int, newest: Int64, mayDropNewest: Bool, delta: inout Counters) throws -> [AppendResult.Dropped] {
        var freed = 0
        var dropped: [AppendResult.Dropped] = []
        func delete(_ rows: [Row], reason: String = "quota") throws {
            for row in rows {
                try db.execute(sql: "DELETE FROM queue WHERE seq = ?", arguments: [row["seq"] as Int64])
                freed += row["size"] as Int
                delta.remove(state: row["state"], size: row["size"])
                dropped.append(.init(kind: MessageKind(rawValue: row["kind"]) ?? .other, reason: reason))
            }
        }
        func oldest(_ filter: String) throws {
            guard freed < need else { return }
            let rows = try Row.fetchAll(db, sql: "SELECT seq, kind, state, LENGTH(payload) AS size FROM queue WHERE \(filter) AND seq != ? ORDER BY seq",
                                        arguments: [newest])
            var chosen: [Row] = []
            var sum = freed
            for row in rows where sum < need {
                chosen.append(row)
                sum += row["size"] as Int
            }
            try delete(chosen)
        }
        // 1. Failed rows (kept only for inspection).
        try oldest("state = 'failed'")
        // 2. Every other periodic telemetry sample.
        if freed < need {
            let rows = try Row.fetchAll(db, sql: """
                SELECT seq, kind, state, size FROM (SELECT seq, kind, state, LENGTH(payload) AS size, ROW_NUMBER() OVER (ORDER BY seq) AS n
                FROM queue WHERE state = 'pending' AND kind = 'telemetry' AND seq != ?) WHERE n % 2 = 0
                """, arguments: [newest])
            try delete(rows)
        }
        // 3. The oldest telemetry, then status, then other notifications. Never transaction messages.
        try oldest("state = 'pending' AND kind = 'telemetry'")
        try oldest("state = 'pending' AND kind = 'status'")
        try oldest("state = 'pending' AND kind = 'other'")
        // 4. Still no room: the new message goes, unless it is a transaction message.
        if freed < need, mayDropNewest {
            let row = try Row.fetchOne(db, sql: "SELECT seq, kind, state, LENGTH(payload) AS size FROM queue WHERE seq = ?", arguments: [newest])
            if let row { try delete([row], reason: "quota-new") }
        }
        return dropped
    }

    /// The oldest pending row.
    public func next() throws -> QueuedMessage? {
        try dbQueue.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM queue WHERE state = 'pending' ORDER BY seq LIMIT 1").map(Self.message)
        }
    }

    /// Rows for inspection, oldest first (pending and failed).
    public func rows(limit: Int = 10_000) throws -> [QueuedMessage] {
        try dbQueue.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM queue ORDER BY seq LIMIT ?", arguments: [limit]).map(Self.message)
        }
    }

    private static func message(_ row: Row) -> QueuedMessage {
        QueuedMessage(seq: row["seq"], action: row["action"], payload: [UInt8](row["payload"] as Data),
                      kind: MessageKind(rawValue: row["kind"]) ?? .other, connector: row["connector"],
                      localTransactionId: row["local_transaction_id"], enqueuedAt: row["enqueued_at"], attempts: row["attempts"],
                      lastError: row["last_error"], state: QueuedMessage.State(rawValue: row["state"]) ?? .pending)
    }

    /// The CSMS answered row `seq`: it leaves the outbox. A replayed StartTransaction records the CSMS's
    /// id for its local one (`mapping`); a StopTransaction ends a mapping (`endTransaction`). One commit.
    @discardableResult
    public func delivered(seq: Int64, mapping: TransactionMapping? = nil, endTransaction: Int? = nil, at time: Double = 0) throws -> OutboxFigures {
        let delta = try dbQueue.write { db -> Counters in
            var delta = Counters()
            if let row = try Row.fetchOne(db, sql: "SELECT state, LENGTH(payload) AS size FROM queue WHERE seq = ?", arguments: [seq]) {
                delta.remove(state: row["state"], size: row["size"])
            }
            try db.execute(sql: "DELETE FROM queue WHERE seq = ?", arguments: [seq])
            if let mapping {
                try db.execute(sql: "INSERT OR REPLACE INTO transaction_map(local_id, csms_id, created_at) VALUES (?, ?, ?)",
                               arguments: [mapping.localId, mapping.csmsId, time])
            }
            if let endTransaction {
                try db.execute(sql: "DELETE FROM transaction_map WHERE local_id = ?", arguments: [endTransaction])
            }
            return delta
        }
        counters.withLock { $0.apply(delta) }
        return try figures()
    }

    /// The CSMS refused row `seq` for good: it stays, marked failed with the error (a refused
    /// StartTransaction records that its transaction has no CSMS id, so its later messages fail too).
    @discardableResult
    public func failed(seq: Int64, error: String, refusedTransaction: Int? = nil, at time: Double = 0) throws -> OutboxFigures {
        let delta = try dbQueue.write { db -> Counters in
            var delta = Counters()
            if try String.fetchOne(db, sql: "SELECT state FROM queue WHERE seq = ?", arguments: [seq]) == "pending" {
                delta.pending -= 1
                delta.failed += 1
            }
            try db.execute(sql: "UPDATE queue SET state = 'failed', attempts = attempts + 1, last_error = ? WHERE seq = ?",
                           arguments: [String(error.prefix(500)), seq])
            if let refusedTransaction {
                try db.execute(sql: "INSERT OR REPLACE INTO transaction_map(local_id, csms_id, created_at) VALUES (?, NULL, ?)",
                               arguments: [refusedTransaction, time])
            }
            let surplus = (try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM queue WHERE state = 'failed'") ?? 0) - limits.maxFailedRows
            if surplus > 0 {
                let size = try Int.fetchOne(db, sql: """
                    SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM (SELECT payload FROM queue WHERE state = 'failed' ORDER BY seq LIMIT ?)
                    """, arguments: [surplus]) ?? 0
                try db.execute(sql: "DELETE FROM queue WHERE seq IN (SELECT seq FROM queue WHERE state = 'failed' ORDER BY seq LIMIT ?)",
                               arguments: [surplus])
                delta.bytes -= size
                delta.failed -= surplus
            }
            return delta
        }
        counters.withLock { $0.apply(delta) }
        return try figures()
    }

    /// A try that did not get through (timeout, CALLERROR to be retried): counted on the row.
    public func attemptFailed(seq: Int64, error: String) throws {
        try dbQueue.write { db in
            try db.execute(sql: "UPDATE queue SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
                           arguments: [String(error.prefix(500)), seq])
        }
    }

    /// The counts from memory, the oldest pending row's time from the index (no table scan).
    public func figures() throws -> OutboxFigures {
        let oldest = try dbQueue.read { db in
            try Double.fetchOne(db, sql: "SELECT enqueued_at FROM queue WHERE state = 'pending' ORDER BY seq LIMIT 1")
        }
        let current = counters.withLock { $0 }
        return OutboxFigures(depth: current.pending, failed: current.failed, bytes: current.bytes, oldest: oldest)
    }

    // MARK: Transaction ids

    /// Every transaction the gateway numbered that is still alive.
    public func transactionMappings() throws -> [TransactionMapping] {
        try dbQueue.read { db in
            try Row.fetchAll(db, sql: "SELECT local_id, csms_id FROM transaction_map").map {
                TransactionMapping(localId: $0["local_id"], csmsId: $0["csms_id"])
            }
        }
    }

    public func mapping(local: Int) throws -> TransactionMapping? {
        try dbQueue.read { db in
            try Row.fetchOne(db, sql: "SELECT local_id, csms_id FROM transaction_map WHERE local_id = ?", arguments: [local]).map {
                TransactionMapping(localId: $0["local_id"], csmsId: $0["csms_id"])
            }
        }
    }

    /// Forgets a mapping (its transaction ended while the outbox was empty).
    public func endTransaction(local: Int) throws {
        try dbQueue.write { db in try db.execute(sql: "DELETE FROM transaction_map WHERE local_id = ?", arguments: [local]) }
    }

    // MARK: Authorization

    /// Remembers what the CSMS said of an idTag (Authorize, StartTransaction, StopTransaction answers).
    /// Tags on the local list are not cached (1.6 §3.5.3). The cache is bounded: not-valid entries go first, then the oldest.
    public func learn(idTag: String, info: IdTagInfo, at time: Double) throws {
        guard Self.isPlausibleIdTag(idTag), limits.authCacheSize > 0 else { return }
        try dbQueue.write { db in
            if try Bool.fetchOne(db, sql: "SELECT 1 FROM local_list WHERE id_tag = ?", arguments: [idTag]) == true { return }
            try db.execute(sql: """
                INSERT OR REPLACE INTO auth_cache(id_tag, status, expiry_date, parent_id_tag, updated_at) VALUES (?, ?, ?, ?, ?)
                """, arguments: [idTag, String(info.status.prefix(20)), info.expiryDate.map { String($0.prefix(40)) },
                                 info.parentIdTag.map { String($0.prefix(20)) }, time])
            let surplus = (try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM auth_cache") ?? 0) - limits.authCacheSize
            if surplus > 0 {
                try db.execute(sql: """
                    DELETE FROM auth_cache WHERE id_tag IN (SELECT id_tag FROM auth_cache
                    ORDER BY (status = 'Accepted' OR status = 'ConcurrentTx'), updated_at LIMIT ?)
                    """, arguments: [surplus])
            }
        }
    }

    /// The answer for `idTag` while the CSMS is away: the local list first, then the cache, then the policy.
    /// An entry whose expiryDate has passed is `Expired` (1.6 §3.5.4).
    public func authorize(idTag: String, policy: OfflineAuthorizePolicy, now: Double) throws -> IdTagInfo {
        if policy == .reject { return IdTagInfo(status: "Invalid") }
        return try dbQueue.read { db in
            for table in ["local_list", "auth_cache"] {
                if let row = try Row.fetchOne(db, sql: "SELECT status, expiry_date, parent_id_tag FROM \(table) WHERE id_tag = ?",
                                              arguments: [idTag]) {
                    var info = IdTagInfo(status: row["status"], expiryDate: row["expiry_date"], parentIdTag: row["parent_id_tag"])
                    if info.status == "Accepted", let expiry = info.expiryDate.flatMap(parseOCPPDate), expiry.timeIntervalSince1970 < now {
                        info.status = "Expired"
                    }
                    return info
                }
            }
            return IdTagInfo(status: policy == .accept ? "Accepted" : "Invalid")
        }
    }

    /// Applies a SendLocalList the CSMS sent: `Full` replaces the list, `Differential` adds, updates
    /// (entries with idTagInfo) and removes (entries without). Returns false (list untouched) when it
    /// would exceed the bound.
    @discardableResult
    public func applyLocalList(version: Int, updateType: String, entries: [(idTag: String, info: IdTagInfo?)]) throws -> Bool {
        do {
            return try applyLocalListOrThrow(version: version, updateType: updateType, entries: entries)
        } catch is RollbackMarker {
            return false
        }
    }

    private func applyLocalListOrThrow(version: Int, updateType: String, entries: [(idTag: String, info: IdTagInfo?)]) throws -> Bool {
        try dbQueue.write { db in
            if updateType == "Full" { try db.execute(sql: "DELETE FROM local_list") }
            for entry in entries where Self.isPlausibleIdTag(entry.idTag) {
                if let info = entry.info {
                    try db.execute(sql: "INSERT OR REPLACE INTO local_list(id_tag, status, expiry_date, parent_id_tag) VALUES (?, ?, ?, ?)",
                                   arguments: [entry.idTag, String(info.status.prefix(20)), info.expiryDate.map { String($0.prefix(40)) },
                                               info.parentIdTag.map { String($0.prefix(20)) }])
                    // A listed tag has priority; it is not cached as well.
                    try db.execute(sql: "DELETE FROM auth_cache WHERE id_tag = ?", arguments: [entry.idTag])
                } else {
                    try db.execute(sql: "DELETE FROM local_list WHERE id_tag = ?", arguments: [entry.idTag])
                }
            }
            if (try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM local_list") ?? 0) > limits.maxLocalListEntries {
                throw RollbackMarker()
            }
            try db.execute(sql: "INSERT OR REPLACE INTO meta(key, value) VALUES ('local_list_version', ?)", arguments: [version])
            return true
        }
    }

    public func localListVersion() throws -> Int {
        try dbQueue.read { db in try Int.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'local_list_version'") ?? 0 }
    }

    static func isPlausibleIdTag(_ tag: String) -> Bool { !tag.isEmpty && tag.utf8.count <= 20 }

}

private struct RollbackMarker: Error {}

/// The outbox holds twice its quota in transaction messages: a new one is refused, not acknowledged.
public struct OutboxFull: Error, CustomStringConvertible, Sendable {
    public var description: String { "the outbox holds twice its quota in transaction messages" }
}

public struct OutboxError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
