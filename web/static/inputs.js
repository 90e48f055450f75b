// mmsearch search page: the ways a file becomes a query (picker, drag and drop, paste, microphone).
// Plain JS, no build step; app.js calls window.mmInputs with its elements and its useFile/setStatus.
"use strict";
window.mmInputs = ({ fileInput, micButton, overlay, useFile, setStatus }) => {
  fileInput.addEventListener("change", () => { useFile(fileInput.files[0]); fileInput.value = ""; });

  let dragDepth = 0;
  const hasFiles = (e) => e.dataTransfer && [...e.dataTransfer.types].includes("Files");
  window.addEventListener("dragenter", (e) => { if (hasFiles(e)) { dragDepth++; overlay.hidden = false; } });
  window.addEventListener("dragleave", () => { dragDepth = Math.max(0, dragDepth - 1); if (!dragDepth) overlay.hidden = true; });
  window.addEventListener("dragover", (e) => { if (hasFiles(e)) e.preventDefault(); });
  window.addEventListener("drop", (e) => {
    e.preventDefault(); dragDepth = 0; overlay.hidden = true;
    if (e.dataTransfer && e.dataTransfer.files.length) useFile(e.dataTransfer.files[0]);
  });

  window.addEventListener("paste", (e) => {
    const files = [...((e.clipboardData && e.clipboardData.files) || [])];
    const image = files.find((f) => f.type.startsWith("image/"));
    if (image) { e.preventDefault(); useFile(new File([image], image.name || "pasted.png", { type: image.type })); }
  });

  let recorder = null;
  micButton.addEventListener("click", async () => {
    if (recorder && recorder.state === "recording") { recorder.stop(); return; }
    if (!navigator.mediaDevices || !window.MediaRecorder) {
      setStatus("error", "This browser cannot record sound here (it needs https or localhost)."); return;
    }
    let stream;
    try { stream = await navigator.mediaDevices.getUserMedia({ audio: true }); }
    catch (err) { setStatus("error", "Microphone unavailable: " + err.message); return; }
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.addEventListener("dataavailable", (e) => { if (e.data.size) chunks.push(e.data); });
    recorder.addEventListener("stop", () => {
      stream.getTracks().forEach((t) => t.stop());
      micButton.setAttribute("aria-pressed", "false");
      const type = recorder.mimeType || "audio/webm";
      const ext = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
      useFile(new File(chunks, `recording.${ext}`, { type }));
    });
    recorder.start();
    micButton.setAttribute("aria-pressed", "true");
    setStatus("loading", "Recording… click the microphone again to stop and search.");
  });
};
