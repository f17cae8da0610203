/* tagrelay collector (ES5). Guarded everywhere: never throws. */
(function (w) {
  var d = w.document, T = w.tagrelay, nav = w.navigator, loc = w.location;
  var P = "__TAGRELAY_COLLECT__"; // the server writes the collect path here
  var S = { user: {}, consent: {}, click_ids: {} }, queue = [], auto = 1, pv, tick, url, i, k;
  var last = loc.href, ref = d.referrer;

  function newId() {
    var C = w.crypto, b = new Uint8Array(16), s = '', j;
    try { return C.randomUUID(); } catch (e) {} // secure contexts only
    try { C.getRandomValues(b); } catch (e) {}
    for (j = 0; j < 16; j++) s += ((b[j] ^ Math.random() * 256) + 256).toString(16).slice(1);
    return s;
  }

  // text/plain: no CORS preflight.
  function send(json) {
    try { if (nav.sendBeacon(url, json)) return; } catch (e) {}
    try {
      return w.fetch(url, { method: 'POST', body: json, keepalive: true, credentials: 'include', mode: 'no-cors',
        headers: { 'Content-Type': 'text/plain;charset=UTF-8' } })['catch'](Object);
    } catch (e) {}
    new Image().src = url + '?d=' + encodeURIComponent(json);
  }

  function flush() {
    try {
      while (queue.length) {
        var b = { v: 1, events: queue.splice(0, 50) }; // max per hit
        for (k in S) if (Object.keys(S[k]).length) b[k] = S[k];
        b.screen = screen.width + 'x' + screen.height;
        b.language = nav.language;
        send(JSON.stringify(b));
        d.dispatchEvent(new CustomEvent('tagrelay:sent', { detail: b }));
      }
    } catch (e) {}
  }

  function event(name, params, opts) {
    // The server refuses a whole hit for one bad name or id: drop a bad
    // name here, and replace a bad id, so other events still go.
    if (typeof name != 'string' || !/^[A-Za-z]\w{0,63}$/.test(name)) return;
    var p = {}, e, k, id;
    params = params || {};
    for (k in params) if (k != 'event_id') p[k] = params[k];
    id = String((opts || {}).id || params.event_id || '');
    e = { name: name, id: /^[\w.:-]{1,64}$/.test(id) ? id : newId(), time: Date.now(),
      page: { url: loc.href, referrer: ref, title: d.title }, params: p };
    JSON.stringify(e); // throws on cycles: drop the event, not the batch
    queue.push(e);
    if (!tick) tick = w.Promise ? Promise.resolve().then(later) : setTimeout(later, 0);
  }

  function later() { tick = 0; flush(); } // one hit per tick

  // Applies to later events only; sent batches keep their copy.
  function merge(key, add, types) {
    var n = {}, o = S[key], k, v;
    for (k in o) n[k] = o[k];
    for (k in add) if ((v = add[k]) == null || v === '') delete n[k]; else if (types.indexOf(typeof v) >= 0) n[k] = v;
    flush();
    S[key] = n;
  }

  function pick(o, keys) {
    var r = {}, k;
    for (k in o) if (keys.indexOf(k) >= 0) r[k] = o[k] == null ? o[k] : String(o[k]);
    return r;
  }

  function run(a) {
    try {
      var c = a[0], o = a[1];
      if (c == 'event') event(o, a[2], a[3]);
      if (c == 'user') merge(c, pick(o, ['email', 'phone', 'first_name', 'last_name', 'external_id']), 'string');
      if (c == 'consent') merge(c, o, 'boolean');
      if (c == 'config' && o.page_view === false) auto = 0;
    } catch (e) {}
  }

  function pageView() { if (auto) event('page_view'); }

  // SPA: a new URL (fragment aside) is a page view.
  function moved() {
    try {
      var u = loc.href;
      if (u.split('#')[0] != last.split('#')[0]) ref = last, pageView();
      last = u;
    } catch (e) {}
  }

  try {
    if (T && T.loaded) return;

    // Our own origin: www.shop.example may load us from t.shop.example.
    url = (/^\w+:\/\/[^\/]+/.exec((d.currentScript || 0).src) || [''])[0] + P;

    // Click IDs stay raw: vendors match them byte for byte.
    loc.search.slice(1).split('&').forEach(function (kv) {
      var k = kv.split('=')[0], v = kv.slice(k.length + 1);
      if (v && !S.click_ids[k] && /^(fbclid|gclid|gbraid|wbraid|ttclid|msclkid|li_fat_id|ScCid|epik|rdt_cid|twclid)$/.test(k)) S.click_ids[k] = v;
    });

    var api = w.tagrelay = function () { run(arguments); }, q = T && T.q || [];
    api.loaded = 1;
    // Queued config/user/consent come before the automatic page_view.
    for (i = 0; i < q.length; i++) {
      if (q[i][0] == 'event' && !pv) pv = 1, pageView();
      run(q[i]);
    }
    if (!pv) pageView();

    w.addEventListener('popstate', moved);
    w.addEventListener('pagehide', flush);
    d.addEventListener('visibilitychange', function () { if (d.hidden) flush(); });
    ['pushState', 'replaceState'].forEach(function (n) {
      var h = w.history, f = h[n];
      if (f) h[n] = function () { var r = f.apply(this, arguments); moved(); return r; };
    });
  } catch (e) {}
})(this);
