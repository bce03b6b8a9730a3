import Foundation
import Testing
import TelemetryCompression

/// Series that try to break the compressors: steps, spikes, ramps, noise, gaps, plateaus.
struct SeriesGenerator {
    var state: UInt64

    mutating func next() -> Double {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Double(state >> 11) / Double(1 << 53)
    }

    mutating func series(_ kind: Int, count: Int) -> [Sample] {
        var time = 0.0
        var value = 16.0
        var samples: [Sample] = []
        for index in 0..<count {
            time += kind == 4 && next() < 0.1 ? 1 + next() * 120 : 1  // gaps
            switch kind {
            case 0: value = index % 50 < 25 ? 16 : 32  // steps
            case 1: value = next() < 0.02 ? 40 * next() : 16  // spikes
            case 2: value = 0.05 * Double(index) + (next() - 0.5) * 0.2  // ramp with noise
            case 3: value += (next() - 0.5) * 2  // random walk
            case 4: value = 16 + sin(Double(index) / 10) * 5  // sine with gaps
            default: value = 230 + (next() - 0.5) * 0.4  // plateau with noise
            }
            samples.append(Sample(time: time, value: value))
        }
        return samples
    }
}

@Suite("telemetry compression")
struct CompressorPropertyTests {
    @Test(arguments: 0..<6)
    func swingingDoorReconstructionStaysWithinCompDev(kind: Int) {
        for seed in 1...40 {
            var generator = SeriesGenerator(state: UInt64(seed * 7919 + kind))
            let series = generator.series(kind, count: 400)
            let compDev = [0.05, 0.5, 2.0][seed % 3]
            let maxTime = seed % 4 == 0 ? 30.0 : .infinity
            var compressor = SwingingDoorCompressor(compDev: compDev, compMaxTime: maxTime)
            var archived: [Sample] = []
            for sample in series { archived += compressor.add(sample) }
            archived += compressor.flush()
            #expect(archived.first == series.first, "the first point is reported")
            #expect(archived.last == series.last, "the series ends on its true last value")
            #expect(zip(archived, archived.dropFirst()).allSatisfy { $0.time < $1.time })
            for sample in series {
                let reconstructed = interpolate(archived, at: sample.time) ?? .nan
                #expect(abs(reconstructed - sample.value) <= compDev + 1e-9,
                        "kind \(kind) seed \(seed): \(sample) vs \(reconstructed), compDev \(compDev)")
            }
            if maxTime.isFinite {
                #expect(zip(archived, archived.dropFirst()).allSatisfy { $1.time - $0.time <= maxTime + 121 },
                        "compMaxTime forces archiving (a gap can make one interval longer)")
            }
        }
    }

    @Test(arguments: 0..<6)
    func deadbandHoldStaysWithinTheBand(kind: Int) {
        for seed in 1...40 {
            var generator = SeriesGenerator(state: UInt64(seed * 104729 + kind))
            let series = generator.series(kind, count: 400)
            let band = [0.1, 1.0, 3.0][seed % 3]
            var compressor = DeadbandCompressor(band: band, maxTime: 60)
            var reported: [Sample] = []
            var held: Double?
            for sample in series {
                let out = compressor.add(sample)
                reported += out
                if let last = out.last { held = last.value }
                #expect(abs((held ?? .nan) - sample.value) <= band + 1e-9, "a consumer holding the last report is within the band")
            }
            reported += compressor.flush()
            #expect(reported.first == series.first && reported.last == series.last)
            #expect(zip(reported, reported.dropFirst()).allSatisfy { $1.time - $0.time <= 60 + 121 })
        }
    }

    @Test func outOfOrderAndDuplicateSamplesAreIgnored() {
        var compressor = SwingingDoorCompressor(compDev: 1)
        #expect(compressor.add(Sample(time: 10, value: 1)) == [Sample(time: 10, value: 1)])
        #expect(compressor.add(Sample(time: 10, value: 5)).isEmpty)
        #expect(compressor.add(Sample(time: 9, value: 5)).isEmpty)
        var deadband = DeadbandCompressor(band: 1)
        _ = deadband.add(Sample(time: 10, value: 1))
        #expect(deadband.add(Sample(time: 5, value: 50)).isEmpty)
    }

    @Test func aPlateauCompressesToItsEnds() {
        var compressor = SwingingDoorCompressor(compDev: 0.5)
        var archived: [Sample] = []
        for second in 0..<3600 { archived += compressor.add(Sample(time: Double(second), value: 16 + (second % 2 == 0 ? 0.1 : -0.1))) }
        archived += compressor.flush()
        #expect(archived.count <= 3, "\(archived.count) points for an hour of plateau")
    }

    /// A point the doors did not move is the sample itself, bit for bit: the tap then publishes the
    /// charger's own string for it. Recomputing it from the slope gave 230.20000000000002 for 230.2.
    @Test(arguments: 0..<6)
    func pointsTheDoorsAllowAreArchivedBitForBit(kind: Int) {
        var unmoved = 0
        for seed in 1...40 {
            var generator = SeriesGenerator(state: UInt64(seed * 31337 + kind))
            let series = generator.series(kind, count: 400).map { Sample(time: $0.time, value: ($0.value * 100).rounded() / 100) }
            let byTime = Dictionary(series.map { ($0.time, $0.value) }, uniquingKeysWith: { a, _ in a })
            var compressor = SwingingDoorCompressor(compDev: [0.05, 0.5, 2.0][seed % 3])
            var archived: [Sample] = []
            for sample in series { archived += compressor.add(sample) }
            archived += compressor.flush()
            for point in archived {
                let original = byTime[point.time]!
                if abs(point.value - original) < 1e-9 {
                    #expect(point.value == original, "kind \(kind) seed \(seed): \(point.value) for \(original)")
                    unmoved += 1
                }
            }
        }
        #expect(unmoved > 0)
    }

    /// The shipped defaults: 0.5 % of the range the values stay within. A DC current is compressed
    /// with 2.5 A once it reaches 375 A, an AC current with 0.16 A; the series never loses a point
    /// at the change of range and ends on its true last value.
    @Test func theRangeStepsUpWithTheValues() {
        var ac = SeriesCompressor(algorithm: "sdt", deviation: nil, deviationPercent: 0.5, span: nil, measurand: "Current.Import")
        var dc = ac
        #expect(ac.deviation == 0.16)
        var generator = SeriesGenerator(state: 42)
        var dcSamples: [Sample] = [], dcPoints: [Sample] = []
        for second in 0..<600 {
            let amps = second < 60 ? 375 * Double(second) / 60 : 375 + (generator.next() - 0.5) * 2
            let sample = Sample(time: Double(second), value: (amps * 10).rounded() / 10)
            dcSamples.append(sample)
            dcPoints += dc.add(sample)
            _ = ac.add(Sample(time: Double(second), value: 16 + (generator.next() - 0.5) * 0.1))
        }
        dcPoints += dc.flush()
        #expect(dc.deviation == 2.5 && ac.deviation == 0.16)
        #expect(dcPoints.count < 40, "\(dcPoints.count) points")
        #expect(dcPoints.first == dcSamples.first && dcPoints.last == dcSamples.last)
        for sample in dcSamples {
            #expect(abs((interpolate(dcPoints, at: sample.time) ?? .nan) - sample.value) <= 2.5 + 1e-9)
        }
        var fixed = SeriesCompressor(algorithm: "sdt", deviation: nil, deviationPercent: 0.5, span: 32, measurand: "Current.Import")
        _ = fixed.add(Sample(time: 0, value: 375))
        #expect(fixed.deviation == 0.16, "a configured span is kept")
        #expect(SeriesCompressor(algorithm: "sdt", deviation: nil, deviationPercent: 0.5, span: nil, measurand: "Bogus").deviation == nil)
    }
}
