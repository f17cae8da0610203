/* tagrelay pixel shims (ES5): fbq gtag ttq snaptr pintrk rdt -> tagrelay().
   Rules: tests/test_shims.py. Guarded everywhere: never throws. */
(function (w) {
  var d = w.document, O = {}, NAME = {}, U = {}, D = {}, tt, n, k;
  // Vendor names -> GA4's.
  var PARAM = { order_id: 'transaction_id', transactionId: 'transaction_id', search_string: 'search_term',
    query: 'search_term', search_query: 'search_term', promo_code: 'coupon', number_items: 'num_items',
    itemCount: 'num_items', order_quantity: 'num_items', client_dedup_id: 'event_id', conversionId: 'event_id' };
  var ITEM = { id: 'item_id', content_id: 'item_id', product_id: 'item_id', name: 'item_name',
    content_name: 'item_name', product_name: 'item_name', item_price: 'price', product_price: 'price',
    product_quantity: 'quantity', category: 'item_category', content_category: 'item_category',
    product_category: 'item_category', product_brand: 'item_brand', product_variant: 'item_variant' };
  // Standard events, keyed lowercase without "_"; the canonical name is a key too.
  ('view_item viewcontent|add_to_cart addcart|add_to_wishlist|begin_checkout initiatecheckout startcheckout|' +
   'add_payment_info addbilling|purchase completepayment checkout|generate_lead lead submitform|sign_up ' +
   'completeregistration|search|view_item_list listview viewcategory|login|share|contact|customize_product|' +
   'donate|find_location|schedule|start_trial|submit_application|subscribe|page_view pagevisit').split('|')
    .forEach(function (s) { s = s.split(' '); s.concat(s[0].replace(/_/g, '')).forEach(function (k) { NAME[k] = s[0]; }); });

  function own(m, k) { return m && O.hasOwnProperty.call(m, k) ? m[k] : '' }
  function obj(o) { return o && typeof o == 'object' ? o : {} }
  function run(f, a) { try { return f(a); } catch (e) {} }
  function tr() { try { w.tagrelay.apply(w, arguments); } catch (e) {} }
  function noop() {}
  function ads(v) { tr('consent', { ads: v }); }

  function user() {
    var a = arguments, o = {}, j, v, any;
    for (j = 0; j < 5; j++) {
      v = [].concat(a[j])[0]; // pixels take lists too; the collector one string
      if (v && (v = String(v)).length <= 512)
        o['email phone first_name last_name external_id'.split(' ')[j]] = v, any = 1;
    }
    if (any) tr('user', o);
  }

  // A copy of p, vendor names renamed, its item list as GA4 items[].
  function conv(p, x) {
    var o = {}, k, v;
    p = obj(p);
    for (k in p) if (typeof (v = p[k]) != 'function') o[own(x, k) || own(PARAM, k) || k] = v;
    'contents line_items products content_ids item_ids'.split(' ').forEach(function (k, i) {
      if ((v = o[k]) == null || i < 3 && !(v instanceof Array)) return;
      delete o[k];
      if (!o.items) o.items = [].concat(v).map(function (it) {
        var r = {}, j;
        if (i > 2) return { item_id: String(it) };
        for (j in it = obj(it)) r[own(ITEM, j) || j] = it[j];
        return r;
      });
    });
    return o;
  }

  function ev(name, p, id) {
    if (typeof name != 'string' || !name) return;
    name = name.replace(/\W/g, '_'); // what the collect endpoint refuses
    if (/^[^A-Za-z]/.test(name)) name = 'e_' + name;
    if (id == null) id = p.event_id;
    delete p.event_id;
    tr('event', name.slice(0, 64), p, id != null && /^[\w.:-]{1,64}$/.test(id) ? { id: String(id) } : {});
  }

  // Standard events by canonical name, others as given; no second page_view.
  function std(name, p, id) {
    var c = own(NAME, String(name).toLowerCase().replace(/_/g, ''));
    if (c == 'page_view') {
      if (!p.items) return;
      c = 'view_item'; // a Pinterest pagevisit with line_items
    }
    ev(c || name, p, id);
  }

  // An update wins over defaults; among defaults denied wins.
  // TODO(issue shims-region): a `region` default holds only there, which the
  // browser cannot tell, so its denials count everywhere until the wire format
  // carries regional defaults for the server to resolve by geo.
  function consent(mode, p) {
    var k, v, g, o = {};
    if (mode != 'update' && mode != 'default') return;
    for (k in { ad_storage: 0, analytics_storage: 0, ad_user_data: 0, ad_personalization: 0 }) {
      v = p[k];
      g = k == 'ad_storage' ? 'ads' : k == 'analytics_storage' ? 'analytics' : k;
      if (v != 'granted' && v != 'denied') continue;
      if (mode == 'update') U[g] = v == 'granted';
      else if (v == 'denied' || !p.region && D[g] == null) D[g] = v == 'granted';
    }
    for (k in D) o[k] = D[k];
    for (k in U) o[k] = U[k];
    tr('consent', o);
  }

  function gtag(a) {
    var c = a[0], b = a[1], p = obj(a[2]), cb = p.event_callback, x = {}, k, done;
    if (!a || typeof c != 'string' || !(a instanceof Array || O.toString.call(a) == '[object Arguments]')) return;
    if (c == 'event') {
      for (k in p) if (!/^event_(callback|timeout)$/.test(k) && typeof p[k] != 'function') x[k] = p[k];
      if (typeof cb == 'function') {
        // As gtag.js: once the hit is sent, or after event_timeout ms.
        done = function () {
          d.removeEventListener('tagrelay:sent', done);
          if (cb) run(cb), cb = 0;
        };
        d.addEventListener('tagrelay:sent', done);
        setTimeout(done, p.event_timeout || 2000);
      }
      ev(b, x);
    }
    if (c == 'config') {
      // Only GA's page views are the collector's; an Ads ID's setting is not.
      if (p.send_page_view === false && /^G/.test(b)) tr('config', { page_view: false });
      user(0, 0, 0, 0, p.user_id);
    }
    if (c == 'set') {
      x = obj([].concat(p.address)[0]);
      if (b == 'user_data') user(p.email || p.sha256_email_address, p.phone_number || p.sha256_phone_number,
        x.first_name || x.sha256_first_name, x.last_name || x.sha256_last_name);
      user(0, 0, 0, 0, obj(b).user_id);
    }
    if (c == 'consent') consent(b, p);
    // Answered with undefined: the IDs live in server-set cookies.
    if (c == 'get' && typeof a[3] == 'function') setTimeout(function () { run(a[3]); }, 0);
  }

  function fbq(a) {
    var c = a[0], j = /Single/.test(c) ? 2 : 1, p = obj(a[2]);
    if (c == 'init') user(p.em, p.ph, p.fn, p.ln, p.external_id);
    if (c == 'consent' && /^(grant|revoke)$/.test(a[1])) ads(a[1] == 'grant');
    if (/^track(Single)?(Custom)?$/.test(c))
      (/Custom/.test(c) ? ev : std)(a[j], conv(a[j + 1]), obj(a[j + 2]).eventID);
  }

  // TikTok: ttq.method(...), queued as [method, ...args].
  var TT = {
    track: function (name, p, o) { std(name, conv(p), obj(o).event_id); },
    identify: function (p) {
      p = obj(p);
      user(p.email || p.sha256_email, p.phone_number || p.sha256_phone_number, 0, 0, p.external_id);
    },
    grantConsent: function () { ads(true); },
    revokeConsent: function () { ads(false); },
    ready: function (f) { setTimeout(function () { run(f); }, 0); },
    push: function (a) { if (a && own(TT, a[0])) TT[a[0]].apply(tt, [].slice.call(a, 1)); },
    instance: function () { return tt; }
  };
  'page load instances debug on off once alias group enableCookie disableCookie holdConsent'.split(' ')
    .forEach(function (m) { TT[m] = noop; });

  function snaptr(a) {
    var p = obj(a[2]);
    if (a[0] == 'init') user(p.user_email || p.user_hashed_email, p.user_phone_number || p.user_hashed_phone_number);
    if (a[0] == 'track') std(a[1], conv(p, { price: 'value' }));
  }

  function pintrk(a) {
    var c = a[0], p = obj(a[c == 'set' ? 1 : 2]);
    if (c == 'load' || c == 'set') user(p.em);
    if (c == 'setconsent' && typeof a[1] == 'boolean') ads(a[1]);
    if (c == 'track') std(a[1], conv(p));
  }

  // TODO(issue shims-reddit): value passes as given, though Reddit may read it
  // in minor units without useDecimalCurrencyValues, until its docs settle it.
  function rdt(a) {
    var p = conv(a[2]), name = obj(a[2]).customEventName;
    user(p.email, p.phoneNumber, 0, 0, p.externalId);
    if (a[0] == 'init' && p.optOut === true) ads(false);
    if (a[0] != 'track') return;
    'email phoneNumber externalId idfa aaid optOut customEventName'.split(' ').forEach(function (k) { delete p[k]; });
    a[1] == 'Custom' && name ? ev(String(name), p) : std(a[1], p);
  }

  // Stubs call n[hook] once set, else push to n[queue].
  function take(v, hook, queue, f) {
    var n = w[v] || (w[v] = function () { n[hook].apply(n, arguments); }), q = [].slice.call(n[queue] || []);
    n[hook] = function () { run(f, arguments); };
    n[queue] = { push: function (a) { run(f, a); } }; // Pinterest's stub always pushes
    q.forEach(n[queue].push);
    return n;
  }

  try {
    if (w.tagrelayShims) return;
    w.tagrelayShims = 1;
    if (!w.tagrelay) w.tagrelay = function () { (w.tagrelay.q = w.tagrelay.q || []).push(arguments); };

    // gtag first: its consent defaults must precede every pixel's events.
    n = w.dataLayer = w.dataLayer || [];
    for (k = 0; k < n.length; k++) run(gtag, n[k]);
    var push = n.push; // GTM may have wrapped it: keep that
    n.push = function () {
      for (var j = 0; j < arguments.length; j++) run(gtag, arguments[j]);
      return push.apply(this, arguments);
    };
    if (!w.gtag) w.gtag = function () { w.dataLayer.push(arguments); };

    n = take('fbq', 'callMethod', 'queue', fbq);
    if (!w._fbq) w._fbq = n;

    // TikTok's snippet reassigns ttq's methods and load() even when ttq exists:
    // accessors that ignore writes keep ours (and its script unloaded).
    tt = w.ttq = w.ttq || [];
    n = [].slice.call(tt);
    for (k in obj(tt._i)) n = n.concat([].slice.call(tt._i[k]));
    tt.length = 0;
    for (k in TT) Object.defineProperty(tt, k, { set: noop, configurable: true, get: (function (f) {
      var g = function () { try { return f.apply(tt, arguments); } catch (e) {} };
      return function () { return g; };
    })(TT[k]) });
    n.forEach(function (a) { run(TT.push, a); });

    take('snaptr', 'handleRequest', 'queue', snaptr);
    take('pintrk', 'callMethod', 'queue', pintrk);
    take('rdt', 'sendEvent', 'callQueue', rdt);
    n = w.rdt;
    n.init = function () { run(rdt, ['init'].concat([].slice.call(arguments))); }; // Segment's style
    n.track = function () { run(rdt, ['track'].concat([].slice.call(arguments))); };
  } catch (e) {}
})(this);
