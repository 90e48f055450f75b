// mmsearch search page: formatting helpers (sizes, durations, dates, ranks, item metadata, library counts).
// Plain JS, no build step; app.js uses them as window.mmFormat.
"use strict";
window.mmFormat = (() => {
  const pad = (n) => String(n).padStart(2, "0");

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

  return { size, duration, date, metadataRows, library, ranker };
})();
