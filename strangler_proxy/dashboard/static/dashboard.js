// Migration dashboard: live updates, route changes and CDC lag charts.
// Hand-written, no libraries, no build step. Every piece of data is put into the page with
// textContent / setAttribute (never innerHTML), so nothing from the server is parsed as HTML.
(function () {
  "use strict";

  var PREFIX = "/dashboard";
  var SVG = "http://www.w3.org/2000/svg";
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.getAttribute("content") : "";
  var routesBody = document.getElementById("routes-body");
  if (!routesBody) { return; }

  var freshness = document.getElementById("freshness");
  var pollMs = parseInt(freshness.getAttribute("data-poll-ms"), 10) || 1000;
  var announceBox = document.getElementById("announce");
  var lastJson = {};
  var lastModes = null;
  var lastMismatches = null;
  var stopped = false;
  var timer = null;

  // -- small DOM helpers ---------------------------------------------------------------
  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (attrs[k] === null || attrs[k] === undefined || attrs[k] === false) { return; }
        if (k === "text") { node.textContent = String(attrs[k]); } else { node.setAttribute(k, String(attrs[k])); }
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) { continue; }
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }
  function svg(tag, attrs) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    return node;
  }
  function num(v, digits) {
    if (v === null || v === undefined) { return "–"; }
    return Number(v).toFixed(digits === undefined ? 1 : digits);
  }
  function localTime(ts) {
    if (ts === null || ts === undefined) { return "–"; }
    var d = new Date(ts * 1000);
    return d.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + " " + d.toLocaleTimeString();
  }
  function timeEl(ts) {
    return el("time", { datetime: new Date(ts * 1000).toISOString(), text: localTime(ts) });
  }
  function muted(text) { return el("span", { "class": "muted", text: text }); }
  function emptyRow(cols, text) {
    return el("tr", null, el("td", { colspan: cols, "class": "muted", text: text }));
  }
  function announce(text) {
    announceBox.textContent = "";
    window.setTimeout(function () { announceBox.textContent = text; }, 50);
  }

  // Replace a tbody only when its data changed, keeping keyboard focus where it was.
  function replaceBody(id, data, build) {
    var json = JSON.stringify(data);
    if (lastJson[id] === json) { return; }
    lastJson[id] = json;
    var body = document.getElementById(id);
    var active = document.activeElement;
    var focusKey = null;
    if (active && body.contains(active)) {
      focusKey = active.getAttribute("data-key") ? ["data-key", active.getAttribute("data-key")]
        : (active.getAttribute("href") ? ["href", active.getAttribute("href")] : null);
    }
    var fresh = document.createElement("tbody");
    fresh.id = id;
    build(fresh);
    body.parentNode.replaceChild(fresh, body);
    if (focusKey) {
      var again = Array.prototype.find.call(fresh.querySelectorAll("[" + focusKey[0] + "]"), function (n) {
        return n.getAttribute(focusKey[0]) === focusKey[1];
      });
      if (again) { again.focus(); }
    }
  }

  // -- sections ------------------------------------------------------------------------
  function parityText(p, url) {
    if (!p) { return muted("no data"); }
    var span = el("span", null, p.matches + " match · " + p.mismatches + " mismatch · " + p.noise + " noise" + (p.denied ? " · " + p.denied + " denied" : "") + (p.lagged ? " · " + p.lagged + " lagged" : ""));
    if (p.mismatches || p.errors) {
      span.appendChild(document.createTextNode(" · "));
      span.appendChild(el("a", { href: url, text: "diffs" }));
    }
    return span;
  }

  function renderRoutes(routes) {
    replaceBody("routes-body", routes, function (tbody) {
      if (!routes.length) { tbody.appendChild(emptyRow(8, "No routes are declared: everything goes to the monolith.")); return; }
      routes.forEach(function (r) {
        var row = el("tr", { "data-key": r.key },
          el("th", { scope: "row", "class": "endpoint" },
            el("span", { "class": "method", text: r.method }), " ", el("code", { text: r.path })),
          el("td", { text: r.service }),
          el("td", null, el("span", { "class": "mode mode-" + r.mode_kind, text: r.mode })));
        if (r.path_rows) {
          // Traffic is per path pattern: one set of cells spans all rows of the path.
          row.appendChild(el("td", { "class": "num traffic", rowspan: r.path_rows, text: num(r.traffic.req_s) }));
          row.appendChild(el("td", { "class": "num traffic", rowspan: r.path_rows, text: num(r.traffic.err_s) }));
          row.appendChild(el("td", { "class": "num traffic", rowspan: r.path_rows, text: r.traffic.requests + " / " + r.traffic.errors }));
        }
        row.appendChild(el("td", { "class": "parity" }, parityText(r.parity, r.mismatch_url)));
        row.appendChild(el("td", null, el("button", {
          type: "button", "class": "small change-btn", "data-key": r.key,
          "aria-label": "Change " + r.key, text: "Change…"
        })));
        tbody.appendChild(row);
      });
    });
    updateEndpointOptions(routes);
  }

  function updateEndpointOptions(routes) {
    var select = document.getElementById("endpoint");
    var chosen = select.value;
    var json = JSON.stringify(routes.map(function (r) { return [r.key, r.mode]; }));
    if (lastJson.options === json) { return; }
    lastJson.options = json;
    while (select.firstChild) { select.removeChild(select.firstChild); }
    routes.forEach(function (r) {
      var opt = el("option", {
        value: r.key, "data-mode": r.mode_kind, "data-percent": r.percent || "",
        "data-service": r.service, text: r.key + " (" + r.mode + ")"
      });
      if (r.key === chosen) { opt.selected = true; }
      select.appendChild(opt);
    });
  }

  function renderServices(services) {
    replaceBody("services-body", services, function (tbody) {
      services.forEach(function (s) {
        var step = muted("–");
        if (s.step) {
          step = el("span", null, s.step.step);
          if (s.step.index !== null && s.step.total) { step.appendChild(el("span", { "class": "muted", text: " (" + s.step.index + "/" + s.step.total + ")" })); }
          if (s.step.status) { step.appendChild(document.createTextNode(" ")); step.appendChild(el("span", { "class": "tag", text: s.step.status })); }
        }
        tbody.appendChild(el("tr", null,
          el("th", { scope: "row" }, s.name, el("br"), el("small", { "class": "muted", text: s.url })),
          el("td", null, step),
          el("td", { text: s.breaker || "–" }),
          el("td", { "class": "num", text: s.routes })
        ));
      });
    });
  }

  function renderParity(parity) {
    replaceBody("parity-body", parity, function (tbody) {
      if (!parity.length) { tbody.appendChild(emptyRow(8, "No parity data yet.")); return; }
      parity.forEach(function (p) {
        tbody.appendChild(el("tr", { "class": p.mismatches ? "bad" : null },
          el("th", { scope: "row" }, el("code", { text: p.endpoint })),
          el("td", { "class": "num", text: p.matches }),
          el("td", { "class": "num", text: p.mismatches }),
          el("td", { "class": "num", text: p.noise }),
          el("td", { "class": "num", text: p.errors }),
          el("td", { "class": "num", text: p.denied, title: "both sides answered 401/403: not a match" }),
          el("td", { "class": "num", text: p.agreement === null ? "–" : num(p.agreement * 100, 2) + "%" }),
          el("td", null, el("a", { href: p.url }, "View diffs", el("span", { "class": "visually-hidden", text: " for " + p.endpoint })))
        ));
      });
    });
  }

  // A small line chart of lag seconds (or events when seconds are unknown) as inline SVG.
  function lagChart(t) {
    var W = 240, H = 52, PAD = 4;
    var points = t.history.slice(-180);
    var useSeconds = points.some(function (p) { return p[1] !== null; });
    var values = points.map(function (p) { return useSeconds ? p[1] : p[2]; }).map(function (v) { return v === null ? 0 : v; });
    var unit = useSeconds ? "s" : " events";
    var max = Math.max.apply(null, values.concat([useSeconds ? 1 : 10]));
    var t0 = points.length ? points[0][0] : 0;
    var t1 = points.length ? points[points.length - 1][0] : 1;
    var span = Math.max(1, t1 - t0);
    var current = values.length ? values[values.length - 1] : 0;
    var label = "Lag of " + t.table + " over the last " + Math.round(span) + " s: now " +
      num(current, useSeconds ? 2 : 0) + unit + ", highest " + num(Math.max.apply(null, values.concat([0])), useSeconds ? 2 : 0) + unit;
    var chart = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": label });
    var title = svg("title", {});
    title.textContent = label;
    chart.appendChild(title);
    chart.appendChild(svg("line", { x1: PAD, y1: H - PAD, x2: W - PAD, y2: H - PAD, stroke: "#c3cad5", "stroke-width": 1 }));
    var axis = svg("text", { x: PAD, y: 10, "class": "axis" });
    axis.textContent = "max " + num(max, useSeconds ? 1 : 0) + unit;
    chart.appendChild(axis);
    if (points.length) {
      var coords = points.map(function (p, i) {
        var x = PAD + ((p[0] - t0) / span) * (W - 2 * PAD);
        var y = H - PAD - (values[i] / max) * (H - 2 * PAD - 8);
        return x.toFixed(1) + "," + y.toFixed(1);
      });
      chart.appendChild(svg("polyline", { points: coords.join(" "), fill: "none", stroke: "#1f5fbf", "stroke-width": 1.8, "stroke-linejoin": "round" }));
      var last = coords[coords.length - 1].split(",");
      chart.appendChild(svg("circle", { cx: last[0], cy: last[1], r: 2.8, fill: current > 0 ? "#b45309" : "#15803d" }));
    }
    return chart;
  }

  function renderCdc(cdc) {
    replaceBody("cdc-body", cdc, function (tbody) {
      if (!cdc.length) { tbody.appendChild(emptyRow(4, "No CDC pipeline reported.")); return; }
      cdc.forEach(function (t) {
        tbody.appendChild(el("tr", { "data-table": t.table },
          el("th", { scope: "row", text: t.table }),
          el("td", { "class": "num", text: t.lag_events === null ? "–" : t.lag_events }),
          el("td", { "class": "num", text: num(t.lag_seconds, 2) }),
          el("td", { "class": "chart-cell" }, lagChart(t))
        ));
      });
    });
  }

  function renderShadow(shadow) {
    document.getElementById("shadow-total").textContent = shadow.total;
    replaceBody("shadow-body", shadow.pairs, function (tbody) {
      if (!shadow.pairs.length) { tbody.appendChild(emptyRow(5, "No shadow traffic yet.")); return; }
      shadow.pairs.forEach(function (p) {
        tbody.appendChild(el("tr", null,
          el("td", null, timeEl(p.at)),
          el("th", { scope: "row" }, el("a", { href: p.url }, el("code", { text: p.request }))),
          el("td", { "class": "num", text: p.monolith_status }),
          el("td", { "class": "num", text: p.service_status !== null ? p.service_status : (p.service_error || "–") }),
          el("td", { text: p.same ? "same" : "differs" })
        ));
      });
    });
  }

  function renderAudit(audit) {
    replaceBody("audit-body", audit, function (tbody) {
      if (!audit.length) { tbody.appendChild(emptyRow(6, "No route changes yet.")); return; }
      audit.forEach(function (a) {
        var change = el("td", null, (a.old_mode || "(new)") + " → " + (a.new_mode || "(removed)"));
        if (a.new_service && a.new_service !== a.old_service) { change.appendChild(el("span", { "class": "muted", text: " (" + a.new_service + ")" })); }
        tbody.appendChild(el("tr", null,
          el("td", null, timeEl(a.at)),
          el("td", { text: a.actor }),
          el("th", { scope: "row" }, el("code", { text: a.endpoint })),
          change,
          el("td", { text: a.reason }),
          el("td", { "class": "num", text: a.version })
        ));
      });
    });
  }

  function renderProblems(problems) {
    var box = document.getElementById("problems");
    var json = JSON.stringify(problems);
    if (lastJson.problems === json) { return; }
    lastJson.problems = json;
    while (box.firstChild) { box.removeChild(box.firstChild); }
    problems.forEach(function (p) { box.appendChild(el("p", { text: p })); });
    box.hidden = problems.length === 0;
  }

  function announceChanges(state) {
    var modes = {};
    var mismatches = 0;
    state.routes.forEach(function (r) { modes[r.key] = r.mode; });
    state.parity.forEach(function (p) { mismatches += p.mismatches; });
    var news = [];
    if (lastModes) {
      Object.keys(modes).forEach(function (k) {
        if (lastModes[k] !== undefined && lastModes[k] !== modes[k]) { news.push(k + " is now " + modes[k]); }
      });
    }
    if (lastMismatches !== null && mismatches > lastMismatches) {
      news.push((mismatches - lastMismatches) + " new parity mismatch" + (mismatches - lastMismatches > 1 ? "es" : ""));
    }
    lastModes = modes;
    lastMismatches = mismatches;
    if (news.length) { announce(news.join(". ") + "."); }
  }

  function render(state) {
    document.getElementById("route-version").textContent = state.version;
    document.getElementById("active-version").textContent = state.active_version;
    var updated = document.getElementById("updated-at");
    updated.textContent = new Date(state.generated_at * 1000).toLocaleTimeString();
    updated.setAttribute("datetime", new Date(state.generated_at * 1000).toISOString());
    freshness.parentNode.classList.remove("stale");
    freshness.firstChild.textContent = "live · updated ";
    renderRoutes(state.routes);
    renderServices(state.services);
    renderParity(state.parity);
    renderCdc(state.cdc);
    renderShadow(state.shadow);
    renderAudit(state.audit);
    renderProblems(state.problems);
    announceChanges(state);
  }

  // -- polling -------------------------------------------------------------------------
  function sessionEnded() {
    stopped = true;
    var box = document.getElementById("change-result");
    box.hidden = false;
    box.className = "msg error";
    box.textContent = "";
    box.appendChild(el("strong", { text: "Signed out. " }));
    box.appendChild(el("a", { href: PREFIX + "/login", text: "Sign in again" }));
    freshness.firstChild.textContent = "stopped · last update ";
  }

  function poll() {
    if (stopped) { return; }
    window.clearTimeout(timer);
    fetch(PREFIX + "/api/state", { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (resp) {
        if (resp.status === 401) { sessionEnded(); return null; }
        if (!resp.ok) { throw new Error("HTTP " + resp.status); }
        return resp.json();
      })
      .then(function (state) { if (state) { render(state); } })
      .catch(function () {
        freshness.parentNode.classList.add("stale");
        freshness.firstChild.textContent = "connection lost, retrying · last update ";
      })
      .then(function () { if (!stopped) { timer = window.setTimeout(poll, pollMs); } });
  }

  // -- route changes -------------------------------------------------------------------
  var form = document.getElementById("change-form");
  var endpointSel = document.getElementById("endpoint");
  var modeSel = document.getElementById("mode");
  var percent = document.getElementById("percent");
  var result = document.getElementById("change-result");

  function syncPercent() {
    var canary = modeSel.value === "canary";
    percent.disabled = !canary;
    percent.required = canary;
  }
  function syncFromEndpoint() {
    var opt = endpointSel.options[endpointSel.selectedIndex];
    if (!opt) { return; }
    modeSel.value = opt.getAttribute("data-mode");
    percent.value = opt.getAttribute("data-percent") || "";
    syncPercent();
  }
  function showResult(kind, title, message) {
    result.hidden = false;
    result.className = "msg " + kind;
    result.textContent = "";
    result.appendChild(el("strong", { text: title + " " }));
    result.appendChild(document.createTextNode(message));
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body)
    }).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (data) { return { status: resp.status, data: data }; });
    });
  }

  function handle(outcome) {
    if (outcome.status === 401) { sessionEnded(); return; }
    if (outcome.status >= 200 && outcome.status < 300) {
      showResult("ok", "Done.", outcome.data.message || "Changed.");
      // A forced change should never carry over to the next one by accident.
      document.getElementById("force").checked = false;
      document.getElementById("reason").value = "";
    } else {
      var err = outcome.data.error || {};
      showResult("error", err.code === "refused" ? "Refused:" : "Not changed:", err.message || ("HTTP " + outcome.status));
    }
    poll();
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var button = document.getElementById("apply");
    button.disabled = true;
    var body = {
      endpoint: endpointSel.value,
      mode: modeSel.value,
      service: document.getElementById("service").value || null,
      reason: document.getElementById("reason").value,
      force: document.getElementById("force").checked
    };
    if (modeSel.value === "canary") { body.percent = percent.value; }
    post(PREFIX + "/routes", body).then(handle, function () {
      showResult("error", "Not changed:", "the proxy did not answer.");
    }).then(function () { button.disabled = false; });
  });

  document.getElementById("reset-form").addEventListener("submit", function (event) {
    event.preventDefault();
    if (!window.confirm("Send every route back to the monolith?")) { return; }
    post(PREFIX + "/reset", { reason: "rolled back from the dashboard" }).then(handle, function () {
      showResult("error", "Not changed:", "the proxy did not answer.");
    });
  });

  endpointSel.addEventListener("change", syncFromEndpoint);
  modeSel.addEventListener("change", syncPercent);

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest(".change-btn") : null;
    if (!button) { return; }
    endpointSel.value = button.getAttribute("data-key");
    syncFromEndpoint();
    document.getElementById("change").scrollIntoView({ block: "start" });
    modeSel.focus();
  });

  // Times rendered by the server are UTC; show them in local time like the live updates.
  Array.prototype.forEach.call(document.querySelectorAll("time[datetime]"), function (t) {
    var ms = Date.parse(t.getAttribute("datetime"));
    if (!isNaN(ms) && t.id !== "updated-at") { t.textContent = localTime(ms / 1000); }
  });

  if (!document.querySelector("#change-result.error")) { syncFromEndpoint(); } else { syncPercent(); }
  timer = window.setTimeout(poll, 0);
})();
