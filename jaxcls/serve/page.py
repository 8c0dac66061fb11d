"""The page at GET /: drop (or pick) an image, see the top-5 from POST /predict."""

HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>jaxcls</title>
<style>
body { font: 15px system-ui, sans-serif; max-width: 40em; margin: 2em auto; }
#drop { border: 2px dashed #888; border-radius: 8px; padding: 2em; text-align: center; }
#drop.over { background: #eef; }
#preview { max-width: 12em; max-height: 12em; display: block; margin: 1em auto; }
table { border-collapse: collapse; width: 100%; } td { padding: .2em .5em; }
td.bar div { background: #48c; height: .8em; }
#error { color: #b00; }
</style></head><body>
<h1 id="title">jaxcls</h1>
<div id="drop">Drop an image here, or <input type="file" id="file" accept="image/*"></div>
<img id="preview" alt="">
<p id="error"></p>
<table id="result"></table>
<script>
const drop = document.getElementById("drop"), result = document.getElementById("result");
const error = document.getElementById("error"), preview = document.getElementById("preview");
fetch("metadata").then(r => r.json()).then(m => {
  document.getElementById("title").textContent = m.source.workdir + " (step " + m.source.step
    + ", " + m.class_names.length + " classes)";
});
async function predict(file) {
  preview.src = URL.createObjectURL(file);
  error.textContent = ""; result.innerHTML = "";
  const r = await fetch("predict?top_k=5", {method: "POST", body: file,
    headers: {"Content-Type": file.type || "application/octet-stream"}});
  const body = await r.json();
  if (!r.ok) { error.textContent = body.detail; return; }
  for (const p of body.predictions[0].top_k) {
    const row = result.insertRow();
    row.insertCell().textContent = p.label;
    row.insertCell().textContent = (100 * p.probability).toFixed(1) + "%";
    const bar = row.insertCell(); bar.className = "bar";
    bar.innerHTML = "<div style='width:" + (100 * p.probability) + "%'></div>";
  }
}
drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", e => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files.length) predict(e.dataTransfer.files[0]);
});
document.getElementById("file").addEventListener("change", e => {
  if (e.target.files.length) predict(e.target.files[0]);
});
</script></body></html>
"""
