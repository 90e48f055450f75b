// mmsearch search page: an item's tags as chips (on result cards and in the detail view), and the tags filter
// (the labels picked, as removable chips in the filter area). A label is only ever a text node.
// Plain JS, no build step; app.js uses it as window.mmTags.
"use strict";
window.mmTags = (() => {
  const el = window.mmFormat.el;

  // An item's tags as buttons; clicking one calls pick(label). Null for an item without tags. The same label
  // from two sets shows once, with its best score (the API sends the best first).
  function chips(tags, pick) {
    if (!Array.isArray(tags) || !tags.length) return null;
    const box = el("div", "tags"), seen = new Map();
    tags.forEach((t) => {
      if (!t || typeof t.label !== "string") return;
      const score = typeof t.score === "number" ? t.score.toFixed(2) : "";
      if (seen.has(t.label)) { seen.get(t.label).title += `; ${t.set} ${score}`; return; }
      const chip = el("button", "tag", t.label);
      chip.type = "button";
      chip.dataset.label = t.label;
      chip.title = `${t.set} ${score} — click to show only items tagged ${t.label}`;
      chip.addEventListener("click", (e) => { e.stopPropagation(); pick(t.label); });
      seen.set(t.label, chip);
      box.append(chip);
    });
    return box.children.length ? box : null;
  }

  // The filter's labels as chips with a remove button each (remove(label)).
  function filters(box, labels, remove) {
    box.replaceChildren();
    box.hidden = !labels.length;
    labels.forEach((label) => {
      const chip = el("span", "tag-filter");
      chip.dataset.label = label;
      chip.append(el("span", "label", "tag: " + label));
      const b = el("button", "", "\u00d7");
      b.type = "button"; b.setAttribute("aria-label", `Remove the tag filter ${label}`);
      b.addEventListener("click", () => remove(label));
      chip.append(b);
      box.append(chip);
    });
  }

  return { chips, filters };
})();
