// mmsearch search page: plain JS, no build step. Talks to the JSON API under /api.
"use strict";
(() => {
  const $ = (selector) => document.querySelector(selector);
  const form = $("#search-form"), input = $("#q"), statusBox = $("#status"), grid = $("#results");
  const moreButton = $("#more"), chipsBox = $("#query-chips"), kInput = $("#k"), fusionSelect = $("#fusion");
  const hybridBox = $("#hybrid");
  const fileInput = $("#file-input"), micButton = $("#mic"), overlay = $("#drop-overlay"), intro = $("#intro");
  const dialog = $("#detail"), template = $("#card-template"), libraryBox = $("#library"), fmt = window.mmFormat;
  const el = fmt.el;  // mmFormat.el: text only ever as text nodes
  const matches = window.mmMatches, tagsUi = window.mmTags, tagBox = $("#tag-filters");
  const AUDIO_EXT = /\.(wav|flac|ogg|oga|mp3|m4a|opus|mp4|m4v|mov|webm|avi)$/i;

  // What is being searched for: words, an item (like), and/or a file (image or sound).
  // words: the query's words, highlighted in the results' text; hybrid: whether this search sent hybrid.
  // tags: the labels of the tags filter (every one must be on a result), from the chips of cards and details.
  const state = { q: "", like: null, likeName: "", file: null, fileKind: null, offset: 0, words: [], hybrid: false,
                  tags: [] };
  let inFlight = null, rankOf = null, libraryItems = null;

  // --- status -------------------------------------------------------------------------------------
  function setStatus(kind, text) {
    statusBox.className = "status" + (kind ? " " + kind : "");
    statusBox.textContent = text || "";
    statusBox.setAttribute("role", kind === "error" ? "alert" : "status");
    statusBox.dataset.state = kind || "idle";
  }

  // --- options ------------------------------------------------------------------------------------
  function modalities() {
    return [...document.querySelectorAll(".chip[data-modality]")]
      .filter((b) => b.getAttribute("aria-pressed") === "true").map((b) => b.dataset.modality);
  }
  document.querySelectorAll(".chip[data-modality]").forEach((chip) => chip.addEventListener("click", () => {
    chip.setAttribute("aria-pressed", chip.getAttribute("aria-pressed") === "true" ? "false" : "true");
    if (hasQuery()) search();
  }));
  fusionSelect.addEventListener("change", () => { if (hasQuery()) search(); });
  hybridBox.addEventListener("change", () => { if (hasQuery()) search(); });
  kInput.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); search(); } });

  function hasQuery() { return Boolean(input.value.trim() || state.like || state.file); }

  // --- the tags filter: a card's or the detail view's tag chip adds its label, a filter chip's × removes it
  function renderTags() { tagsUi.filters(tagBox, state.tags, removeTag); }
  function addTag(label) {
    if (dialog.open) dialog.close();
    if (!state.tags.includes(label)) state.tags.push(label);
    renderTags();
    if (hasQuery()) search();
  }
  function removeTag(label) {
    state.tags = state.tags.filter((t) => t !== label);
    renderTags();
    if (hasQuery()) search();
  }

  // --- query chips (file, like) -----------------------------------------------------------------
  function renderChips() {
    chipsBox.replaceChildren();
    if (state.file) {
      const chip = el("span", "qchip");
      chip.dataset.kind = state.fileKind;
      if (state.fileKind === "image") {
        const img = el("img"); img.alt = ""; img.src = URL.createObjectURL(state.file); chip.append(img);
      } else chip.append(el("span", "label", "\u266A"));
      chip.append(el("span", "label", state.file.name || state.fileKind));
      chip.append(removeButton(() => { state.file = null; state.fileKind = null; renderChips(); }));
      chipsBox.append(chip);
    }
    if (state.like) {
      const chip = el("span", "qchip");
      chip.dataset.kind = "like";
      chip.append(el("span", "label", "like: " + (state.likeName || "#" + state.like)));
      chip.append(removeButton(() => { state.like = null; renderChips(); }));
      chipsBox.append(chip);
    }
  }
  function removeButton(onClick) {
    const b = el("button", "", "\u00d7"); b.type = "button"; b.setAttribute("aria-label", "Remove");
    b.addEventListener("click", onClick); return b;
  }

  function useFile(file) {
    if (!file) return;
    const kind = (file.type.startsWith("audio/") || file.type.startsWith("video/") || AUDIO_EXT.test(file.name))
      ? "audio" : "image";  // anything else goes to the server as an image, which says what is wrong
    state.file = file; state.fileKind = kind;
    renderChips();
    search();
  }

  // --- URL <-> state ------------------------------------------------------------------------------
  function toURL(push) {
    const params = new URLSearchParams();
    if (input.value.trim()) params.set("q", input.value.trim());
    if (state.like) params.set("like", state.like);
    modalities().forEach((m) => params.append("modality", m));
    if (kInput.value && kInput.value !== "24") params.set("k", kInput.value);
    if (fusionSelect.value !== "early") params.set("fusion", fusionSelect.value);
    if (hybridBox.checked) params.set("hybrid", "1");
    state.tags.forEach((t) => params.append("tag", t));
    const url = location.pathname + (params.toString() ? "?" + params : "");
    if (url !== location.pathname + location.search) history[push ? "pushState" : "replaceState"](null, "", url);
  }
  function fromURL() {
    const params = new URLSearchParams(location.search);
    input.value = params.get("q") || "";
    state.like = params.get("like") || null;
    state.likeName = "";
    state.file = null; state.fileKind = null;
    const chosen = params.getAll("modality");
    document.querySelectorAll(".chip[data-modality]").forEach((chip) =>
      chip.setAttribute("aria-pressed", chosen.includes(chip.dataset.modality) ? "true" : "false"));
    kInput.value = params.get("k") || "24";
    fusionSelect.value = params.get("fusion") || "early";
    hybridBox.checked = ["1", "true", "on"].includes((params.get("hybrid") || "").toLowerCase());
    state.tags = [...new Set(params.getAll("tag").filter((t) => t))];
    renderChips(); renderTags();
    if (state.like) nameLike(state.like);
  }
  async function nameLike(id) {  // a like: from the URL names its item once the API says what it is
    try {
      const response = await fetch(`/api/items/${encodeURIComponent(id)}`);
      const item = response.ok ? await response.json() : null;
      if (item && item.name && state.like === id && !state.likeName) { state.likeName = item.name; renderChips(); }
    } catch (err) { /* the search itself says what is wrong with the id */ }
  }

  // --- library size: always shown; an empty library says how to fill it ---------------------------
  async function showLibrary() {
    try {
      const response = await fetch("/api/stats");
      const stats = await response.json();
      if (!response.ok) throw new Error(stats.error ? stats.error.message : `HTTP ${response.status}`);
      libraryItems = stats.items || 0;
      libraryBox.textContent = fmt.library(stats);
      libraryBox.dataset.items = libraryItems;
      $("#empty-library").hidden = libraryItems > 0;
    } catch (err) { libraryBox.textContent = "library size unknown: " + err.message; }
  }

  // --- search ---------------------------------------------------------------------------------------
  async function search(append = false, push = true) {
    if (!hasQuery()) { setStatus("error", "Type some words, or drop, paste, pick or record an image or a sound."); return; }
    if (!append) state.offset = 0;
    const k = parseInt(kInput.value, 10);
    if (!(k >= 1 && k <= parseInt(kInput.max, 10))) { setStatus("error", `k must be from 1 to ${kInput.max}.`); return; }
    toURL(push && !append);
    intro.hidden = true;
    setStatus("loading", append ? "Loading more…" : "Searching…");
    if (!append) { grid.replaceChildren(); moreButton.hidden = true; rankOf = fmt.ranker(); }
    $("#go").disabled = true;
    if (inFlight) inFlight.abort();
    const controller = new AbortController(); inFlight = controller;
    let init;
    const options = { k, offset: state.offset, fusion: fusionSelect.value, explain: true };
    if (!append) {
      state.words = fmt.queryWords(input.value);
      // hybrid looks the query's words up: a search without any (a file, like:ID, only -words) is refused
      state.hybrid = hybridBox.checked && fmt.hasWords(input.value);
    }
    if (state.hybrid) options.hybrid = true;
    const mods = modalities();
    if (state.file) {
      const body = new FormData();
      if (input.value.trim()) body.append("text", input.value.trim());
      if (state.like) body.append("like", state.like);
      body.append(state.fileKind, state.file, state.file.name || state.fileKind);
      Object.entries(options).forEach(([key, value]) => body.append(key, value));
      mods.forEach((m) => body.append("modality", m));
      state.tags.forEach((t) => body.append("tags", t));
      init = { method: "POST", body };
    } else {
      const body = { ...options };
      if (input.value.trim()) body.text = input.value.trim();
      if (state.like) body.like = Number(state.like);
      if (mods.length) body.modality = mods;
      if (state.like && !input.value.trim()) body.exclude_self = true;
      if (state.tags.length) body.filters = { tags: [...state.tags] };
      init = { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
    }
    init.signal = controller.signal;
    const started = performance.now();
    try {
      const response = await fetch("/api/search", init);
      const data = await response.json().catch(() => null);
      if (!response.ok || !data || data.error) {
        const message = data && data.error ? data.error.message
          : response.status === 413 ? "the file is too large for this server" : `HTTP ${response.status}`;
        if (state.file && (response.status === 400 || response.status === 413)) {
          state.file = null; state.fileKind = null; renderChips();  // a refused file stays refused: drop it
        }
        throw new Error(message);
      }
      // late fusion and hybrid (vector and word rankings fused by RRF) score on no common scale: ranks
      const late = (data.fusion && data.fusion !== "early") || state.hybrid;
      const fused = state.hybrid ? (data.fusion && data.fusion !== "early" ? data.fusion + " + hybrid" : "hybrid")
        : data.fusion;
      data.results.forEach((r) => grid.append(card(r, late ? rankOf(r.score) : null, fused)));
      state.offset = data.next || 0;
      moreButton.hidden = !data.next;
      const total = grid.children.length;
      const ms = Math.round(performance.now() - started);
      if (total) showLibrary();
      else { await showLibrary(); if (controller.signal.aborted) return; }  // an empty library says so
      if (!total && libraryItems === 0) setStatus("empty", "Nothing indexed yet: run `mmsearch index PATH`.");
      else if (!total) setStatus("empty", "No results. Try other words, another file, or fewer filters.");
      else setStatus("done", `${total} result${total === 1 ? "" : "s"} in ${ms} ms`);
    } catch (err) {
      if (err.name === "AbortError") return;
      setStatus("error", "Search failed: " + err.message);
    } finally {
      if (inFlight === controller) { inFlight = null; $("#go").disabled = false; }
    }
  }
  moreButton.addEventListener("click", () => search(true, false));

  form.addEventListener("submit", (e) => { e.preventDefault(); search(); });

  // --- results --------------------------------------------------------------------------------------
  function card(r, rank, fusion) {
    const node = template.content.firstElementChild.cloneNode(true);
    node.classList.add(r.modality);
    node.dataset.id = r.id;
    node.dataset.modality = r.modality;
    const visual = node.querySelector(".visual");
    if (r.modality === "image") {
      const img = el("img", "thumb"); img.loading = "lazy"; img.alt = r.caption || r.name; img.src = r.thumbnail_url;
      visual.append(img);
      visual.addEventListener("click", () => showDetail(r.id));
    } else if (r.modality === "audio") {
      const wave = el("div", "wave"), picture = el("img"), played = el("div", "played");
      picture.alt = "waveform of " + r.name; picture.src = r.thumbnail_url;
      wave.append(picture, played);
      const length = fmt.duration(r.metadata && r.metadata.duration);
      if (length) wave.append(el("span", "length", length));  // the stored duration, before any byte loads
      const audio = el("audio"); audio.controls = true; audio.preload = "metadata"; audio.src = r.media_url;
      audio.addEventListener("timeupdate", () => {
        if (audio.duration) played.style.width = (100 * audio.currentTime / audio.duration) + "%";
      });
      matches.segment(r, wave, audio, visual);
      wave.addEventListener("click", (e) => {  // click the picture to seek
        const box = wave.getBoundingClientRect();
        const seek = () => { audio.currentTime = audio.duration * (e.clientX - box.left) / box.width; audio.play(); };
        if (audio.readyState >= 1) seek(); else { audio.addEventListener("loadedmetadata", seek, { once: true }); audio.load(); }
      });
      visual.prepend(wave); visual.append(audio);
    } else {
      visual.append(matches.snippet(r, state.words));
      visual.addEventListener("click", () => showDetail(r.id));
    }
    const badge = el("span", "badge", r.modality); visual.append(badge);
    node.querySelector(".name").textContent = r.name;
    node.querySelector(".name").title = r.path;
    const score = node.querySelector(".score");
    if (rank) {  // late fusion: the place in the fused list; the raw sum is in the tooltip
      score.textContent = "#" + rank; score.dataset.rank = rank;
      score.title = `rank ${rank} after ${fusion} fusion (fused score ${Number(r.score).toPrecision(3)})`;
    } else if (typeof r.score === "number") score.textContent = r.score.toFixed(3);
    if (r.caption) {
      const caption = el("div", "caption");
      caption.append(fmt.highlight(r.caption, state.words).fragment);
      caption.title = r.caption;
      node.querySelector(".info").after(caption);
    }
    const tagChips = tagsUi.chips(r.tags, addTag);
    if (tagChips) node.querySelector(".actions").before(tagChips);
    const matched = matches.line(r);
    if (matched) node.querySelector(".actions").before(matched);
    const why = explain(r);
    if (why) node.querySelector(".actions").before(el("div", "why", why));
    node.querySelector(".like").addEventListener("click", () => moreLike(r.id, r.name));
    node.querySelector(".details").addEventListener("click", () => showDetail(r.id));
    return node;
  }

  // Why a result came up: each query part's score (and rank in its list, for late fusion); for an item
  // with a caption, what its caption and its own content scored, so a caption match shows as one.
  function explain(r) {
    const parts = r.parts || [];
    const captioned = parts.some((p) => p.vectors && p.vectors.caption !== undefined);
    const lexical = parts.some((p) => p.lexical && p.lexical.rank);
    if (parts.length < 2 && !captioned && !lexical) return "";
    const fmt = (x) => (typeof x === "number" ? x.toFixed(2) : "–");
    return parts.map((p) => {
      let text = `${p.weight < 0 ? "−" : ""}${p.label} ${fmt(p.score)}`;
      if (p.rank) text += ` #${p.rank}`;
      if (p.lexical && p.lexical.rank) text += ` words #${p.lexical.rank}`;
      if (p.vectors && p.vectors.caption !== undefined) {
        text += ` (caption ${fmt(p.vectors.caption)}, ${r.modality} ${fmt(p.vectors.content)})`;
      }
      return text;
    }).join(" · ");
  }

  function moreLike(id, name) {
    input.value = ""; state.file = null; state.fileKind = null;
    state.like = String(id); state.likeName = name || "";
    renderChips();
    if (dialog.open) dialog.close();
    search();
    window.scrollTo({ top: 0 });
  }

  async function showDetail(id) {
    let item;
    try {
      const response = await fetch(`/api/items/${encodeURIComponent(id)}`);
      item = await response.json();
      if (!response.ok) throw new Error(item.error ? item.error.message : `HTTP ${response.status}`);
    } catch (err) { setStatus("error", "Cannot load the item: " + err.message); return; }
    $("#detail-title").textContent = item.name;
    const preview = $("#detail-preview"); preview.replaceChildren();
    if (item.modality === "image") {
      // Browsers show these types; a HEIC (outside Safari), a TIFF or a camera RAW shows its thumbnail instead
      const shown = /^image\/(jpeg|png|gif|webp|bmp|avif)$/.test((item.metadata || {}).mime || "");
      const img = el("img"); img.src = shown || !item.thumbnail_url ? item.media_url : item.thumbnail_url;
      img.alt = item.caption || item.name; preview.append(img);
    } else if (item.modality === "audio") {
      const img = el("img"); img.src = item.thumbnail_url; img.alt = "waveform"; preview.append(img);
      const audio = el("audio"); audio.controls = true; audio.src = item.media_url; audio.preload = "metadata";
      preview.append(audio);
    } else {
      preview.append(el("pre", "", item.text || item.snippet || ""));
    }
    $("#detail-open").href = item.media_url;
    $("#detail-like").onclick = () => moreLike(item.id, item.name);
    $("#detail-tags").replaceChildren(...[tagsUi.chips(item.tags, addTag)].filter(Boolean));
    const table = $("#detail-meta"); table.replaceChildren();
    const rows = [["id", "id", item.id], ["path", "path", item.path], ["modality", "modality", item.modality]];
    if (item.caption) rows.push(["caption", "caption", item.caption]);
    rows.push(...fmt.metadataRows(item.metadata || {}));
    rows.forEach(([key, label, text, title]) => {
      const tr = el("tr"), td = el("td", "", String(text));
      tr.dataset.key = key;
      if (title) td.title = title;
      tr.append(el("th", "", label), td); table.append(tr);
    });
    if (!dialog.open) dialog.showModal();
  }

  // --- files: picker, drag and drop, paste, microphone (inputs.js) -------------------------------------
  window.mmInputs({ fileInput, micButton, overlay, useFile, setStatus });

  // --- start ----------------------------------------------------------------------------------------
  window.addEventListener("popstate", () => { fromURL(); if (hasQuery()) search(false, false); });
  fromURL();
  showLibrary();
  if (hasQuery()) search(false, false); else input.focus();
  window.mmsearch = { search, state };
})();
