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
