// mmsearch search page: formatting helpers (sizes, durations, dates, ranks, item metadata, library counts,
// the query's words highlighted in a result's text) and the one element maker, el.
// Plain JS, no build step; app.js uses them as window.mmFormat.
"use strict";
window.mmFormat = (() => {
  const pad = (n) => String(n).padStart(2, "0");

  // A new element with a class and text (a text node: never markup), for every script of the page.
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // 78 → "78 B", 32044 → "32.0 KB", 1500000 → "1.5 MB" (decimal units, as file managers show them)
  function size(bytes) {
    if (typeof bytes !== "number" || !isFinite(bytes) || bytes < 0) return "";
    if (bytes < 1000) return `${bytes} B`;
    const units = ["KB", "MB", "GB", "TB"];
    let value = bytes / 1000, unit = 0;
    while (value >= 999.95 && unit < units.length - 1) { value /= 1000; unit++; }
    return `${value < 100 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
  }

  // 1 → "0:01.0", 3.24 → "0:03.2", 75 → "1:15", 3700 → "1:01:40"
  function duration(seconds) {
    if (typeof seconds !== "number" || !isFinite(seconds) || seconds < 0) return "";
    const tenths = Math.round(seconds * 10);
    if (tenths < 600) return `0:${tenths < 100 ? "0" : ""}${(tenths / 10).toFixed(1)}`;
    const total = Math.round(seconds), h = Math.floor(total / 3600), m = Math.floor(total / 60) % 60;
    return `${h ? h + ":" + pad(m) : m}:${pad(total % 60)}`;
  }

  // An ISO timestamp in the reader's locale and time zone. One with an offset is converted to local
  // time; one without (a camera's EXIF time) is that wall-clock time as it stands.
  const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  function date(iso) {
    const when = new Date(iso);
    return isNaN(when) ? String(iso) : dateFormat.format(when);
  }

  const plural = (n, one, many) => `${n.toLocaleString()} ${n === 1 ? one : many}`;

  // The detail view's rows: [key, label, text, title] for each metadata field, in human units.
  function metadataRows(meta) {
    const rows = [], seen = new Set();
    const add = (key, label, text, title) => { rows.push([key, label, text, title || ""]); seen.add(key); };
    const has = (key) => meta[key] !== undefined && meta[key] !== null;
    if (has("mime")) add("mime", "type", meta.mime);
    if (has("size")) add("size", "size", size(meta.size), `${meta.size.toLocaleString()} bytes`);
    if (has("width") && has("height")) {
      add("width", "dimensions", `${meta.width} × ${meta.height} px`); seen.add("height");
    }
    if (has("duration")) add("duration", "duration", duration(meta.duration), `${meta.duration} s`);
    if (has("sample_rate")) add("sample_rate", "sample rate", `${meta.sample_rate / 1000} kHz`);
    if (has("channels")) {
      add("channels", "channels", { 1: "mono", 2: "stereo" }[meta.channels] || String(meta.channels));
    }
    if (has("status")) add("status", "status", meta.status);
    if (has("taken_at")) add("taken_at", "taken", date(meta.taken_at), `${meta.taken_at} (camera time)`);
    if (has("modified")) add("modified", "modified", date(meta.modified), meta.modified);
    if (has("indexed_at")) add("indexed_at", "indexed", date(meta.indexed_at), meta.indexed_at);
    Object.entries(meta).forEach(([key, value]) => {
      if (!seen.has(key)) add(key, key.replace(/_/g, " "), String(value));
    });
    return rows;
  }

  // GET /api/stats → "10 items: 5 images, 2 sounds, 3 notes" (and what is pending or failed)
  function library(stats) {
    const by = stats.by_modality || {};
    const kinds = [[by.image, "image", "images"], [by.audio, "sound", "sounds"], [by.text, "note", "notes"]]
      .filter(([n]) => n).map(([n, one, many]) => plural(n, one, many));
    let text = plural(stats.items || 0, "item", "items") + (kinds.length ? ": " + kinds.join(", ") : "");
    if (stats.pending) text += ` · ${stats.pending.toLocaleString()} waiting to be embedded`;
    if (stats.failed) text += ` · ${stats.failed.toLocaleString()} failed`;
    return text;
  }

  // Late fusion scores are sums on no common scale (RRF: 1/61 at best): number the fused list instead,
  // equal scores sharing a rank ("1, 2, 2, 4"). ranker() is called once per result, in order.
  function ranker() {
    let seen = 0, rank = 0, last;
    return (score) => {
      seen++;
      if (score !== last) { rank = seen; last = score; }
      return rank;
    };
  }

  // 16 → "0:16", 75.4 → "1:15", 3700 → "1:01:40": a position in a sound, as players show it (whole seconds)
  function clock(seconds) {
    if (typeof seconds !== "number" || !isFinite(seconds) || seconds < 0) return "";
    const total = Math.floor(seconds + 1e-6), h = Math.floor(total / 3600), m = Math.floor(total / 60) % 60;
    return `${h ? h + ":" + pad(m) : m}:${pad(total % 60)}`;
  }

  // --- the query's words: what a result's text is highlighted with ---------------------------------
  // The search box's syntax (search/syntax.py): terms joined by + or -, a leading - negates the next term,
  // N: before a term weighs it, "quoted phrases", like:ID. Terms as {text, weight}, like: ones left out.
  const WEIGHT = /^([+-]?\d+(?:\.\d+)?):(.+)$/s;
  function tokens(text) {
    const out = [];
    let token = "", quoted = false, started = false, quote = "";
    for (let i = 0; i < text.length; i++) {
      const char = text[i];
      if (quote) {
        if (char === quote) quote = "";
        else if (char === "\\" && quote === '"') token += text[++i] || "";
        else token += char;
      } else if (char === "'" || char === '"') { quote = char; quoted = true; started = true; }
      else if (char === "\\") { token += text[++i] || ""; started = true; }
      else if (/\s/.test(char) || char === "+") {
        if (started) out.push([token, quoted]);
        token = ""; quoted = false; started = false;
        if (char === "+") out.push(["+", false]);
      } else { token += char; started = true; }
    }
    if (started) out.push([token, quoted]);  // an unclosed quote: the server says what is wrong
    return out;
  }
  function terms(text) {
    const out = [];
    let sign = 1;
    for (let [token, quoted] of tokens(String(text || ""))) {
      if (token === "+" && !quoted) { sign = 1; continue; }
      if (token.startsWith("-") && !WEIGHT.test(token)) { sign = -1; token = token.slice(1); if (!token) continue; }
      let weight = sign, term = token;
      const weighted = WEIGHT.exec(token);
      if (weighted) { weight = sign * parseFloat(weighted[1]); term = weighted[2]; }
      sign = 1;
      if (!term.startsWith("like:")) out.push({ text: term, weight });
    }
    return out;
  }
  // Whether a query has words to look up (hybrid search needs a text part with a positive weight).
  const hasWords = (text) => terms(text).some((t) => t.weight > 0 && t.text.trim() !== "");
  // The words of the query's positive terms (2 characters or more), lower case, longest first.
  const WORD = /[\p{L}\p{N}\p{M}]+/gu;
  function queryWords(text) {
    const words = new Set();
    terms(text).filter((t) => t.weight > 0).forEach((t) =>
      (t.text.match(WORD) || []).forEach((w) => { if ([...w].length >= 2) words.add(w.toLocaleLowerCase()); }));
    return [...words].sort((a, b) => b.length - a.length);
  }
  // A pattern matching the words whole (a plural "s" or "es" allowed), case-insensitively; null for none.
  function wordPattern(words) {
    if (!words || !words.length) return null;
    const escaped = words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    return new RegExp(`(?<![\\p{L}\\p{N}\\p{M}])(?:${escaped.join("|")})(?:e?s)?(?![\\p{L}\\p{N}\\p{M}])`, "giu");
  }
  // ``text`` as DOM nodes: text nodes, and each of ``words`` in a <mark>. Never markup from the text
  // itself: it is only ever a text node's data. With ``lead`` (characters), a text whose first match comes
  // later starts a few words before it ("…" in front), so the match is in sight; ``cut`` starts with "…"
  // anyway (a passage from the middle of a note).
  function highlight(text, words, { lead = null, cut = false } = {}) {
    const fragment = document.createDocumentFragment(), pattern = wordPattern(words);
    text = String(text || "");
    const first = pattern ? text.search(pattern) : -1;
    if (lead !== null && first > lead) {
      const from = text.slice(0, first - lead).search(/\s\S*$/);  // the last word boundary before
      text = text.slice(from >= 0 ? from + 1 : first - lead);
      cut = true;
    }
    if (cut) text = "…" + text.replace(/^\s+/, "");
    let at = 0, count = 0;
    if (pattern) {
      for (const found of text.matchAll(pattern)) {
        if (found.index > at) fragment.append(document.createTextNode(text.slice(at, found.index)));
        const mark = document.createElement("mark");
        mark.textContent = found[0];
        fragment.append(mark);
        at = found.index + found[0].length;
        count++;
      }
    }
    if (at < text.length) fragment.append(document.createTextNode(text.slice(at)));
    return { fragment, count };
  }

  return { el, size, duration, date, metadataRows, library, ranker, clock, terms, hasWords, queryWords, highlight };
})();
