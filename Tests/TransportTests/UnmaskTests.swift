import NIOCore
import NIOPosix
import Testing
@testable import Transport

/// Incoming text is unmasked 8 bytes at a time straight into the message array (RFC 6455 §5.3).
@Suite struct UnmaskTests {
    @Test func wordWiseUnmaskingMatchesTheRFCByteByByte() {
        var rng = SystemRandomNumberGenerator()
        for length in 0...70 {
            for offset in 0..<4 {
                let key = (0..<4).map { _ in UInt8.random(in: 0...255, using: &rng) }
                let ascii = length % 3 != 0
                let plain = (0..<length).map { _ in UInt8.random(in: ascii ? 0x20...0x7E : 0...255, using: &rng) }
                let masked = plain.enumerated().map { $1 ^ key[($0 + offset) % 4] }
                var out = [UInt8](repeating: 0, count: length)
                let seen = masked.withUnsafeBytes { source in
                    out.withUnsafeMutableBytes { WebSocketConnection.unmask(source, into: $0, pattern: WebSocketConnection.maskPattern(key, offset: offset)) }
                }
                #expect(out == plain, "length \(length), offset \(offset)")
                #expect((seen & 0x8080_8080_8080_8080 == 0) == plain.allSatisfy { $0 < 0x80 }, "length \(length)")
            }
        }
    }

    @Test func unmaskedTextIsCopiedAsItIs() {
        let text = Array(#"[2,"1","Heartbeat",{}]"#.utf8)
        var out = [UInt8](repeating: 0, count: text.count)
        _ = text.withUnsafeBytes { source in out.withUnsafeMutableBytes { WebSocketConnection.unmask(source, into: $0, pattern: 0) } }
        #expect(out == text)
    }
}

/// Text frames are encoded by the connection itself (one buffer, masked word-wise), as RFC 6455 §5.2 says.
@Suite struct TextFrameEncodingTests {
    /// A reference decoder: FIN and opcode, the length in its three forms, the mask applied byte by byte.
    static func decode(_ wire: [UInt8]) -> (fin: Bool, opcode: UInt8, masked: Bool, payload: [UInt8])? {
        guard wire.count >= 2 else { return nil }
        var index = 2
        var length = Int(wire[1] & 0x7F)
        if length == 126 {
            length = Int(wire[2]) << 8 | Int(wire[3])
            index = 4
        } else if length == 127 {
            length = (0..<8).reduce(0) { $0 << 8 | Int(wire[2 + $1]) }
            index = 10
        }
        let masked = wire[1] & 0x80 != 0
        var key: [UInt8] = [0, 0, 0, 0]
        if masked {
            key = Array(wire[index..<index + 4])
            index += 4
        }
        guard wire.count == index + length else { return nil }
        let payload = wire[index...].enumerated().map { $1 ^ key[$0 % 4] }
        return (wire[0] & 0x80 != 0, wire[0] & 0x0F, masked, payload)
    }

    @Test(arguments: [0, 1, 7, 8, 9, 125, 126, 127, 1000, 65535, 65536, 70001])
    func framesOfEveryLengthForm(length: Int) {
        let message = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        for masked in [false, true] {
            var buffer = ByteBufferAllocator().buffer(capacity: 0)
            WebSocketConnection.writeTextFrame(message, maskKey: masked ? [0xA1, 0x02, 0xF3, 0x44] as [UInt8] : nil, into: &buffer)
            let wire = Array(buffer.readableBytesView)
            let frame = Self.decode(wire)
            #expect(frame?.fin == true)
            #expect(frame?.opcode == 1, "text")
            #expect(frame?.masked == masked)
            #expect(frame?.payload == message, "length \(length), masked \(masked)")
            if masked, length >= 4 {
                #expect(Array(wire.suffix(length)) != message, "the message is masked on the wire")
            }
        }
    }
}

/// A client's mask keys come from the kernel CSPRNG a 4 KiB block (1,024 keys) at a time, not one `getrandom`
/// per frame (RFC 6455 §5.3: a fresh, unpredictable key for every frame).
@Suite struct MaskKeySourceTests {
    @Test func everyFrameHasAFreshKeyAndTheBlockIsFetchedOncePer1024Keys() {
        let source = MaskKeySource()
        #expect(source.refills == 0, "nothing is fetched before the first key")
        var previous: [UInt8] = []
        var repeats = 0
        var seen = Set<[UInt8]>()
        for index in 0..<3000 {
            let key = withUnsafeBytes(of: source.nextWord()) { Array($0) }
            if key == previous { repeats += 1 }
            previous = key
            seen.insert(key)
            if index == 0 { #expect(source.refills == 1) }
            if index == 1023 { #expect(source.refills == 1, "1,024 keys from one block") }
            if index == 1024 { #expect(source.refills == 2, "the block is refilled when spent") }
        }
        #expect(source.refills == 3, "3,000 keys: 3 fetches, not 3,000")
        // Two equal keys in a row out of 3,000 random 32-bit keys: ~7e-7; a stuck or all-zero block repeats every time.
        #expect(repeats == 0)
        #expect(seen.count > 2990, "keys do not cycle (a handful of 32-bit birthday collisions at most)")
    }

    @Test func sourcesDoNotShareTheirBytes() {
        let first = (0..<8).map { _ in Array(MaskKeySource().next()) }  // NIO's key type, for the frames NIO encodes
        #expect(Set(first).count == 8, "each source fetches its own block")
    }

    @Test func framesMaskedWithTheSourcesKeysDecodeAndEachHasItsOwnKey() {
        let source = MaskKeySource()
        let message = Array(#"[2,"19223201","Authorize",{"idTag":"ABC123"}]"#.utf8)
        var keys: [[UInt8]] = []
        for _ in 0..<16 {
            var buffer = ByteBufferAllocator().buffer(capacity: 0)
            WebSocketConnection.writeTextFrame(message, maskWord: source.nextWord(), into: &buffer)
            let wire = Array(buffer.readableBytesView)
            #expect(TextFrameEncodingTests.decode(wire)?.payload == message)
            keys.append(Array(wire[2..<6]))
        }
        #expect(zip(keys, keys.dropFirst()).allSatisfy { $0 != $1 }, "a new key for every frame")
    }

    @Test func eachEventLoopThreadHasItsOwnSource() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        defer { try? group.syncShutdownGracefully() }
        let loops = Array(group.makeIterator())
        // The sources stay alive with their threads, so their identities cannot be reused while compared.
        let ids = try loops.map { loop in
            try loop.submit { () -> [ObjectIdentifier] in
                [ObjectIdentifier(MaskKeySource.current), ObjectIdentifier(MaskKeySource.current)]
            }.wait()
        }
        #expect(ids[0][0] == ids[0][1], "one source per thread, made once")
        #expect(ids[0][0] != ids[1][0], "threads do not share a source")
    }
}
