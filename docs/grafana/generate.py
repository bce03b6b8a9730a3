#!/usr/bin/env python3
"""Writes docs/grafana/ocpp-gateway.json (run from the repository root: python3 docs/grafana/generate.py).
Edit the panels here, regenerate, and run Tests/Interop/test_prometheus.py: every query must run on a real Prometheus."""
import json
I='{instance=~"$instance"}'
def sel(extra=""):
    return '{instance=~"$instance"' + (", " + extra if extra else "") + '}'
NOTOK=sel('result!="ok"'); FWD=sel('verdict=~"forward|modify"'); BAD=sel('verdict=~"drop|error|malformed|unmatched"')
ANS=sel('verdict=~"answer|held"'); DROPPED=sel('result="dropped"')
R="[$__rate_interval]"
panels=[]; y=0; pid=0
def row(title):
    global y,pid
    pid+=1
    panels.append({"type":"row","title":title,"id":pid,"collapsed":False,"gridPos":{"h":1,"w":24,"x":0,"y":y},"panels":[]})
    y+=1
def panel(title, desc, targets, kind="timeseries", unit="short", w=8, h=8, stack=False):
    global pid
    pid+=1
    ds={"type":"prometheus","uid":"${datasource}"}
    p={"type":kind,"title":title,"description":desc,"id":pid,"datasource":ds,"gridPos":{"h":h,"w":w,"x":0,"y":y},
       "fieldConfig":{"defaults":{"unit":unit},"overrides":[]},"options":{},
       "targets":[{"datasource":ds,"refId":chr(65+i),"expr":e,"legendFormat":l} for i,(e,l) in enumerate(targets)]}
    if kind=="timeseries":
        p["fieldConfig"]["defaults"]["custom"]={"drawStyle":"line","lineWidth":1,"fillOpacity":10,"stacking":{"mode":"normal" if stack else "none","group":"A"}}
        p["options"]={"legend":{"displayMode":"table","placement":"bottom","calcs":["mean","max","lastNotNull"]},"tooltip":{"mode":"multi","sort":"desc"}}
    else:
        p["options"]={"reduceOptions":{"calcs":["lastNotNull"],"fields":"","values":False},"colorMode":"value","graphMode":"area","textMode":"auto"}
    return p
def place(ps):
    global y
    x=0
    for p in ps:
        p["gridPos"]["x"]=x; x+=p["gridPos"]["w"]; panels.append(p)
    y+=max(p["gridPos"]["h"] for p in ps)

row("Overview")
place([
 panel("Connected chargers","ocpp_gateway_sessions: chargers with a live session (south link up).",[(f'sum(ocpp_gateway_sessions{I})',"chargers")],kind="stat",w=4,h=5),
 panel("Scrape up","Prometheus reaches the admin listener (/metrics).",[(f'min(up{I})',"up")],kind="stat",w=4,h=5),
 panel("Frames / s","Every frame the router counted, all verdicts.",[(f'sum(rate(ocpp_gateway_frames_total{I}{R}))',"frames/s")],kind="stat",unit="ops",w=4,h=5),
 panel("North connect failures","North connection attempts that did not succeed (failed, timeout, abandoned) since the gateway started (a new series starts at its first count, which increase() would miss).",
       [(f'sum(ocpp_gateway_north_connects_total{NOTOK})',"failures")],kind="stat",w=4,h=5),
 panel("Outbox depth","CALLs waiting in all outboxes for the CSMS (buffer mode).",[(f'sum(ocpp_gateway_outbox_depth{I})',"CALLs")],kind="stat",w=4,h=5),
 panel("Firewall refusals","ids stage refusals since the gateway started, all rules.",[(f'sum(ocpp_gateway_firewall_decisions_total{I})',"refusals")],kind="stat",w=4,h=5),
])
row("Frames")
place([
 panel("Frames by verdict","ocpp_gateway_frames_total by verdict: forward, modify, drop, answer, held (outbox), error, malformed, unmatched, consumed, queued, held_until_boot.",
       [(f'sum by (verdict) (rate(ocpp_gateway_frames_total{I}{R}))',"{{verdict}}")],unit="ops",w=12,stack=True),
 panel("Frames by action and direction","Forwarded and modified frames per OCPP action ('other' = not in the catalogue).",
       [(f'sum by (direction, action) (rate(ocpp_gateway_frames_total{FWD}{R}))',"{{direction}} {{action}}")],unit="ops",w=12),
])
place([
 panel("Refused and broken frames","Frames not relayed: drop, error, malformed, unmatched.",
       [(f'sum by (direction, verdict, action) (rate(ocpp_gateway_frames_total{BAD}{R}))',"{{direction}} {{verdict}} {{action}}")],unit="ops",w=12),
 panel("Answered or held by the gateway","Charger CALLs the gateway answered itself (answer: mqtt_tap's DataTransfer, firewall policy) or held for the outbox while the CSMS is away (held).",
       [(f'sum by (action) (rate(ocpp_gateway_frames_total{ANS}{R}))',"{{action}}")],unit="ops",w=12),
])
row("Links")
place([
 panel("North connects by result","Connection attempts to the CSMS: ok, failed, timeout (past connect_timeout), abandoned.",
       [(f'sum by (result) (rate(ocpp_gateway_north_connects_total{I}{R}))',"{{result}}")],unit="ops",w=8),
 panel("South refusals","Charger upgrades refused (wrong credentials, lockouts, limits).",[(f'sum(rate(ocpp_gateway_south_refused_total{I}{R}))',"refused")],unit="ops",w=8),
 panel("South connection limits","Connections closed before their upgrade, by reason.",
       [(f'sum by (reason) (rate(ocpp_gateway_south_connection_limits_total{I}{R}))',"{{reason}}")],unit="ops",w=8),
])
row("Latency")
place([
 panel("Stage latency p99","99th percentile of the time each stage takes per frame.",
       [(f'histogram_quantile(0.99, sum by (stage, le) (rate(ocpp_gateway_stage_duration_seconds_bucket{I}{R})))',"{{stage}}")],unit="s",w=8),
 panel("Stage latency p50","Median time per frame and stage.",
       [(f'histogram_quantile(0.5, sum by (stage, le) (rate(ocpp_gateway_stage_duration_seconds_bucket{I}{R})))',"{{stage}}")],unit="s",w=8),
 panel("Stage mean time and frames","Mean time per frame per stage, and frames per second through each stage.",
       [(f'sum by (stage) (rate(ocpp_gateway_stage_duration_seconds_sum{I}{R})) / sum by (stage) (rate(ocpp_gateway_stage_duration_seconds_count{I}{R}))',"mean {{stage}}"),
        (f'sum by (stage) (rate(ocpp_gateway_stage_duration_seconds_count{I}{R}))',"frames/s {{stage}}")],unit="s",w=8),
])
row("Firewall")
place([panel("Firewall refusals by rule","ocpp_gateway_firewall_decisions_total by rule (docs/firewall.md).",
       [(f'sum by (rule) (rate(ocpp_gateway_firewall_decisions_total{I}{R}))',"{{rule}}")],unit="ops",w=24,stack=True)])
row("Offline outbox")
place([
 panel("Outbox depth and oldest CALL","CALLs waiting for the CSMS and the age of the oldest.",
       [(f'sum(ocpp_gateway_outbox_depth{I})',"waiting CALLs"),(f'max(ocpp_gateway_outbox_oldest_age_seconds{I})',"oldest age (s)")],w=8),
 panel("Replay","CALLs the CSMS accepted (replayed) and refused (failed) on replay.",
       [(f'sum(rate(ocpp_gateway_outbox_replayed_total{I}{R}))',"replayed"),(f'sum(rate(ocpp_gateway_outbox_failed_total{I}{R}))',"failed")],unit="ops",w=8),
 panel("Dropped before replay","CALLs removed from outboxes by quota or coalescing, by kind and reason.",
       [(f'sum by (kind, reason) (rate(ocpp_gateway_outbox_dropped_total{I}{R}))',"{{kind}} {{reason}}")],unit="ops",w=8),
])
row("Health channel (MQTT)")
place([
 panel("MQTT messages","Messages acknowledged by the broker, and dropped (queue_limit reached).",
       [(f'sum by (result) (rate(ocpp_gateway_mqtt_messages_total{I}{R}))',"{{result}}")],unit="ops",w=8),
 panel("MQTT drop ratio","Share of health-channel messages dropped because the queue was full.",
       [(f'sum(rate(ocpp_gateway_mqtt_messages_total{DROPPED}{R})) / clamp_min(sum(rate(ocpp_gateway_mqtt_messages_total{I}{R})), 1e-9)',"dropped")],unit="percentunit",w=8),
 panel("MQTT queue","Messages waiting for the broker's acknowledgement (bounded by mqtt.queue_limit).",
       [(f'max(ocpp_gateway_mqtt_queue_depth{I})',"waiting")],w=8),
 panel("Health measurands refused","Health measurands and intervals the chargers refused (mqtt_tap health_interval).",
       [(f'sum by (measurand) (increase(ocpp_gateway_health_measurands_refused_total{I}[1h]))',"{{measurand}}"),
        (f'sum(increase(ocpp_gateway_health_interval_refused_total{I}[1h]))',"interval refused")],w=8),
])
row("Operations")
place([
 panel("Reloads","SIGHUP reloads by result; a failed one kept the old pipeline.",[(f'sum by (result) (increase(ocpp_gateway_reloads_total{I}[1h]))',"{{result}}")],w=12),
 panel("State file errors","Per-charger state files that could not be read, decoded or written (each also logged).",
       [(f'sum(increase(ocpp_gateway_state_errors_total{I}[1h]))',"errors")],w=12),
])
dash={"title":"ocpp-gateway","uid":"ocpp-gateway",
 "description":"OCPP 1.6J edge security gateway: sessions, frames, links, stage latency, firewall, outbox, health channel. Metrics: docs/configuration.md.",
 "tags":["ocpp","ev-charging","ocpp-gateway"],"timezone":"browser","schemaVersion":39,"version":1,"editable":True,
 "refresh":"30s","time":{"from":"now-6h","to":"now"},"graphTooltip":1,
 "templating":{"list":[
   {"type":"datasource","name":"datasource","label":"Prometheus","query":"prometheus","current":{},"hide":0,"refresh":1,"options":[]},
   {"type":"query","name":"instance","label":"Gateway","datasource":{"type":"prometheus","uid":"${datasource}"},
    "definition":"label_values(ocpp_gateway_sessions, instance)","query":{"query":"label_values(ocpp_gateway_sessions, instance)","refId":"instance"},
    "includeAll":True,"multi":True,"allValue":".+","current":{},"refresh":2,"sort":1,"hide":0,"options":[]}]},
 "annotations":{"list":[{"builtIn":1,"datasource":{"type":"grafana","uid":"-- Grafana --"},"enable":True,"hide":True,"iconColor":"rgba(0, 211, 255, 1)","name":"Annotations & Alerts","type":"dashboard"}]},
 "panels":panels}
open("docs/grafana/ocpp-gateway.json","w").write(json.dumps(dash,indent=2,ensure_ascii=False)+"\n")
print(sum(len(p.get("targets",[])) for p in panels),"queries,",len(panels),"panels")
