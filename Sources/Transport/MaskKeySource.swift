#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOPosix
import NIOWebSocket

/// The mask keys of a client's frames (RFC 6455 §5.3), fetched from the kernel's CSPRNG a block at a time.
///
/// §5.3 and §10.3 want every frame's key unpredictable to whoever supplies the data; they come from a strong
/// source (the system CSPRNG, `getrandom` via `arc4random_buf` on Linux) exactly as
/// `WebSocketMaskingKey.random()` does, but 4 KiB (1,024 keys) per system call instead of one `getrandom`
/// per frame (half a system call per relayed frame on the north side). A key is used once: the block is read
/// front to back and refilled when spent.
///
/// Not thread-safe: one per event-loop thread (`current`), used only on it. 4 KiB a thread, nothing per connection.
final class MaskKeySource {
    /// Bytes fetched per refill: 1,024 keys.
    static let blockBytes = 4096

    private let block: UnsafeMutableRawBufferPointer
    /// The next unused byte of `block`; `blockBytes` when it is spent.
    private var position: Int
    /// How many times the block was fetched from the system (one system call each on Linux).
    private(set) var refills = 0

    init() {
        block = .allocate(byteCount: Self.blockBytes, alignment: 8)
        position = Self.blockBytes
    }

    deinit {
        // The keys were already sent on the wire, but nothing of them needs to outlive the source.
        block.initializeMemory(as: UInt8.self, repeating: 0)
        block.deallocate()
    }

    /// A fresh key as 4 bytes in memory order (the order they go on the wire): the next 4 unused bytes of
    /// the block, refilled first when it is spent.
    func nextWord() -> UInt32 {
        var at = position
        if at == Self.blockBytes {
            refill()
            at = 0
        }
        position = at + 4
        return block.loadUnaligned(fromByteOffset: at, as: UInt32.self)
    }

    /// A fresh key for a frame NIO encodes (ping, pong, close).
    func next() -> WebSocketMaskingKey {
        withUnsafeBytes(of: nextWord()) { WebSocketMaskingKey($0)! }  // 4 bytes: never nil
    }

    private func refill() {
        #if canImport(Glibc) || canImport(Darwin)
        arc4random_buf(block.baseAddress!, block.count)
        #else
        var generator = SystemRandomNumberGenerator()
        for offset in stride(from: 0, to: block.count, by: 8) {
            block.storeBytes(of: generator.next(), toByteOffset: offset, as: UInt64.self)
        }
        #endif
        refills += 1
    }

    /// Thread-safe itself; each thread's value is only ever used on that thread.
    nonisolated(unsafe) private static let perThread = ThreadSpecificVariable<MaskKeySource>()

    /// The calling thread's source (made on first use, released with the thread).
    static var current: MaskKeySource {
        if let source = perThread.currentValue { return source }
        let source = MaskKeySource()
        perThread.currentValue = source
        return source
    }
}
