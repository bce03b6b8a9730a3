import Foundation
public import NIOSSL

/// What the gateway needs of a client certificate a charger presented over TLS: its subject's common
/// name(s) and validity. Read from the DER with a minimal parser (Transport has no X.509 library):
/// only the path Certificate → tbsCertificate → subject is walked, every length is checked.
public struct PeerCertificate: Sendable, Equatable {
    public var der: [UInt8]
    /// Every commonName (2.5.4.3) of the subject, in order; empty when there is none or the DER is malformed.
    public var commonNames: [String]
    /// Seconds since 1970.
    public var notValidBefore: Int
    public var notValidAfter: Int

    public init(der: [UInt8], commonNames: [String], notValidBefore: Int, notValidAfter: Int) {
        self.der = der
        self.commonNames = commonNames
        self.notValidBefore = notValidBefore
        self.notValidAfter = notValidAfter
    }

    public init?(_ certificate: NIOSSLCertificate) {
        guard let der = try? certificate.toDERBytes() else { return nil }
        self.init(der: der, commonNames: Self.subjectCommonNames(der: der) ?? [],
                  notValidBefore: Int(certificate.notValidBefore), notValidAfter: Int(certificate.notValidAfter))
    }

    /// The one common name, or nil when the subject has none or several (ambiguous: never matched).
    public var commonName: String? { commonNames.count == 1 ? commonNames[0] : nil }

    /// The subject's commonNames from a certificate's DER; nil if the DER does not have the shape of a certificate.
    public static func subjectCommonNames(der: [UInt8]) -> [String]? {
        var reader = DERReader(der[...])
        guard let certificate = reader.read(tag: 0x30)?.contents else { return nil }
        var outer = DERReader(certificate)
        guard let tbsContents = outer.read(tag: 0x30)?.contents else { return nil }
        var tbs = DERReader(tbsContents)
        if tbs.peekTag == 0xA0 { _ = tbs.read() }                   // version
        guard tbs.read(tag: 0x02) != nil,                             // serialNumber
              tbs.read(tag: 0x30) != nil,                             // signature
              tbs.read(tag: 0x30) != nil,                             // issuer
              tbs.read(tag: 0x30) != nil,                             // validity
              let subject = tbs.read(tag: 0x30)?.contents
        else { return nil }
        var names: [String] = []
        var rdns = DERReader(subject)
        while !rdns.isAtEnd {
            guard let set = rdns.read(tag: 0x31)?.contents else { return nil }
            var attributes = DERReader(set)
            while !attributes.isAtEnd {
                guard let attribute = attributes.read(tag: 0x30)?.contents else { return nil }
                var fields = DERReader(attribute)
                guard let oid = fields.read(tag: 0x06)?.contents, let value = fields.read() else { return nil }
                guard Array(oid) == [0x55, 0x04, 0x03] else { continue }
                guard let text = decodeString(tag: value.tag, value.contents) else { return nil }
                names.append(text)
            }
        }
        return names
    }

    private static func decodeString(tag: UInt8, _ bytes: ArraySlice<UInt8>) -> String? {
        switch tag {
        case 0x0C, 0x13, 0x16: return String(bytes: bytes, encoding: .utf8)       // UTF8String, PrintableString, IA5String
        case 0x14: return String(bytes: bytes, encoding: .isoLatin1)              // TeletexString
        case 0x1E: return String(bytes: bytes, encoding: .utf16BigEndian)         // BMPString
        case 0x1C: return String(bytes: bytes, encoding: .utf32BigEndian)         // UniversalString
        default: return nil
        }
    }
}

/// Reads DER TLVs (definite lengths only, as DER requires).
struct DERReader {
    private var bytes: ArraySlice<UInt8>
    init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes }

    var isAtEnd: Bool { bytes.isEmpty }
    var peekTag: UInt8? { bytes.first }

    mutating func read(tag expected: UInt8) -> (tag: UInt8, contents: ArraySlice<UInt8>)? {
        guard peekTag == expected else { return nil }
        return read()
    }

    mutating func read() -> (tag: UInt8, contents: ArraySlice<UInt8>)? {
        var cursor = bytes.startIndex
        guard cursor < bytes.endIndex else { return nil }
        let tag = bytes[cursor]
        guard tag & 0x1F != 0x1F else { return nil }                  // high tag numbers: not in a certificate's path
        cursor += 1
        guard cursor < bytes.endIndex else { return nil }
        var length = Int(bytes[cursor])
        cursor += 1
        if length & 0x80 != 0 {
            let count = length & 0x7F
            guard (1...4).contains(count), bytes.endIndex - cursor >= count else { return nil }
            length = 0
            for _ in 0..<count {
                length = length << 8 | Int(bytes[cursor])
                cursor += 1
            }
        }
        guard length >= 0, bytes.endIndex - cursor >= length else { return nil }
        let contents = bytes[cursor ..< cursor + length]
        bytes = bytes[(cursor + length)...]
        return (tag, contents)
    }
}
