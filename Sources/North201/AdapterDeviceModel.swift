import OCPP
import Router
import StageKit

/// The device model (GetVariables, SetVariables, GetBaseReport) through the charger's configuration keys,
/// with the mapping table of `DeviceModelMap`.
extension North201Adapter {
    /// GetVariables: one GetConfiguration for every key the items need, then one GetVariablesResponse.
    func getVariables(id: String, _ p: JSONValue) {
        let items = p["getVariableData"]?.arrayValue ?? []
        let plans = items.map { options.deviceModel.planGet($0) }
        var keys: [String] = []
        for case .askCharger(let key) in plans where !keys.contains(key) { keys.append(key) }
        let finish: ([ConfigurationEntry], [String]) -> Void = { [weak self] configuration, unknown in
            guard let self else { return }
            let results: [JSONValue] = zip(items, plans).map { item, plan in
                switch plan {
                case .answer(let result): result
                case .askCharger: self.options.deviceModel.getResult(for: item, configuration: configuration, unknownKeys: unknown)
                }
            }
            self.answerHandled(id, "GetVariables", ["getVariableResult": .array(results)])
        }
        guard !keys.isEmpty, let session else { return finish([], []) }
        session.sendCall("GetConfiguration", payload: ["key": .array(keys.map { .string($0) })], to: .charger) { outcome in
            guard case .result(let answer) = outcome else { return finish([], keys) }
            finish(Self.configuration(answer), answer["unknownKey"]?.arrayValue?.compactMap(\.stringValue) ?? [])
        }
    }

    /// SetVariables: one ChangeConfiguration per item, in order, then one SetVariablesResponse.
    func setVariables(id: String, _ p: JSONValue) {
        let items = p["setVariableData"]?.arrayValue ?? []
        var results: [JSONValue] = []
        func next(_ index: Int) {
            guard index < items.count else { return answerHandled(id, "SetVariables", ["setVariableResult": .array(results)]) }
            let item = items[index]
            switch options.deviceModel.planSet(item) {
            case .answer(let result):
                results.append(result)
                next(index + 1)
            case .changeConfiguration(let key, let value):
                guard let session else { return }
                session.sendCall("ChangeConfiguration", payload: ["key": .string(key), "value": .string(value)], to: .charger) { [weak self] outcome in
                    guard let self else { return }
                    let status: String? = if case .result(let answer) = outcome { answer["status"]?.stringValue } else { nil }
                    results.append(self.options.deviceModel.setResult(for: item, changeConfigurationStatus: status))
                    next(index + 1)
                }
            }
        }
        next(0)
    }

    /// GetBaseReport: Accepted at once, then NotifyReport pages from the charger's full configuration.
    func getBaseReport(id: String, _ p: JSONValue) {
        let requestId = p["requestId"]?.intValue ?? 0
        let reportBase = p["reportBase"]?.stringValue ?? "FullInventory"
        answerHandled(id, "GetBaseReport", ["status": "Accepted"])
        let report: ([ConfigurationEntry]) -> Void = { [weak self] configuration in
            guard let self else { return }
            let data = self.options.deviceModel.reportData(configuration: configuration, reportBase: reportBase)
            let pages = DeviceModelMap.notifyReportPages(requestId: requestId, generatedAt: self.now, reportData: data,
                                                         perPage: self.options.reportPageSize)
            for page in pages { self.sendNative("NotifyReport", page) }
        }
        guard let session else { return }
        session.sendCall("GetConfiguration", payload: [:], to: .charger) { outcome in
            guard case .result(let answer) = outcome else { return report([]) }
            report(Self.configuration(answer))
        }
    }

    /// Answers a CSMS CALL the adapter took, validated.
    private func answerHandled(_ id: String, _ action201: String, _ payload: JSONValue) {
        if let problem = problem(action201, payload, response: true) {
            session?.answerNorth(id, with: .error(code: .internalError, description: "invalid translation: \(problem)"))
        } else {
            session?.answerNorth(id, with: .result(payload))
        }
    }

    static func configuration(_ answer: JSONValue) -> [ConfigurationEntry] {
        (answer["configurationKey"]?.arrayValue ?? []).compactMap { entry in
            guard let key = entry["key"]?.stringValue else { return nil }
            return ConfigurationEntry(key: key, value: entry["value"]?.stringValue, readonly: entry["readonly"]?.boolValue ?? false)
        }
    }
}
