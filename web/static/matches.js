// mmsearch search page: what matched in a result (issue #12): a note's matching passage as its snippet, the
// query's words marked; a sound's matching segment (the player starts there, the waveform marks it); the
// kind of match, discreetly. Plain JS, no build step; app.js uses it as window.mmMatches.
// Text from a result (names, passages, captions) only ever becomes text nodes (mmFormat.highlight).
"use strict";
window.mmMatches = (() => {
  const fmt = window.mmFormat;
  const el = fmt.el;

  // A note's snippet: the passage (or caption) that matched, from a few words before the first of the
  // query's words; else the note's opening. The query's words are marked; the text is only text nodes.
  function snippet(r, words) {
    const m = r.match || {}, box = el("div", "snippet");
    const matchedText = (m.kind === "passage" || m.kind === "caption") && typeof m.text === "string" && m.text;
    if (matchedText) {
      const cut = m.kind === "passage" && Array.isArray(m.chars) && m.chars[0] > 0;
      box.append(fmt.highlight(matchedText, words, { lead: SNIPPET_LEAD, cut }).fragment);
      box.dataset.from = m.kind;
      if (m.kind === "passage" && Array.isArray(m.chars)) box.title = `characters ${m.chars[0]}–${m.chars[1]} of the note`;
    } else {
      box.append(fmt.highlight(r.snippet || "", words).fragment);
      box.dataset.from = "opening";
    }
    return box;
  }
  const SNIPPET_LEAD = 60;  // characters shown before a passage's first marked word

  // A sound's matching segment: {start, end (or null)} in seconds, or null.
  function segmentOf(r) {
    const m = r.match;
    if (!m || m.kind !== "segment" || typeof m.start !== "number" || !isFinite(m.start) || m.start < 0) return null;
    return { start: m.start, end: typeof m.end === "number" && m.end > m.start ? m.end : null };
  }

  // The segment on the card: the player starts at it (once its metadata is in), the waveform marks it
  // (percentages of the stored duration, or of the player's once known), "matched at 0:16–0:18" plays it.
  function segment(r, wave, audio, visual) {
    const seg = segmentOf(r);
    if (!seg) return;
    const node = el("div", "segment"); node.hidden = true;
    wave.append(node);
    const place = (total) => {
      if (!(total > 0)) return false;
      const end = Math.min(seg.end === null ? seg.start + 1 : seg.end, total);
      node.style.left = (100 * Math.min(seg.start, total) / total) + "%";
      node.style.width = Math.max(0, 100 * (end - Math.min(seg.start, total)) / total) + "%";
      node.hidden = false;
      return true;
    };
    const stored = r.metadata && r.metadata.duration;
    const placed = place(stored);
    audio.addEventListener("loadedmetadata", () => {
      if (!placed) place(audio.duration);
      if (audio.currentTime < seg.start) audio.currentTime = seg.start;
    }, { once: true });
    const range = fmt.clock(seg.start) + (seg.end === null ? "" : "–" + fmt.clock(Math.ceil(seg.end - 1e-6)));
    const at = el("button", "segment-at link", "matched at " + range);
    at.type = "button"; at.title = "Play the matching part";
    at.addEventListener("click", () => {
      const play = () => { audio.currentTime = seg.start; audio.play(); };
      if (audio.readyState >= 1) play(); else { audio.addEventListener("loadedmetadata", play, { once: true }); audio.load(); }
    });
    visual.append(at);
    visual.closest(".card").dataset.segmentStart = seg.start;
  }

  // What matched, discreetly: the item's content vector, its caption, a passage of a note, a segment of a
  // sound, or (hybrid) its words alone.
  const MATCH_LABELS = { content: "content", caption: "caption", passage: "passage", segment: "segment", lexical: "words" };
  const MATCH_TITLES = { content: "the whole item's vector matched best", caption: "its caption matched best",
    passage: "a passage of the note matched best", segment: "a part of the sound matched best",
    lexical: "found by its words (full-text search) alone" };
  function line(r) {
    const kind = r.match && r.match.kind;
    if (!kind) return null;
    const div = el("div", "match", "matched: " + (MATCH_LABELS[kind] || String(kind)));
    div.dataset.kind = kind;
    div.title = (MATCH_TITLES[kind] || "") + (typeof r.match.score === "number" ? ` (score ${r.match.score.toFixed(3)})` : "");
    return div;
  }

  return { snippet, segment, line };
})();
