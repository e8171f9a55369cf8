// The icreward page: pick an image and videos, POST them to /explain, then show the ranking, every head's value, the
// reward of each sampled frame and the inconsistency map drawn over the video in step with playback.
// Plain JS, no libraries, nothing fetched but this server's own /model and /explain.
"use strict";

(() => {
  const GRID = 16; // map cells per side asked of /explain
  const FRAME_SIZE = 256; // longer side of the sampled frames asked for when the browser cannot play a video
  const FALLBACK_FPS = 8; // pace of the sampled frames when neither the server nor the video gives their times

  const $ = (selector, root = document) => root.querySelector(selector);
  const state = { image: null, videos: [], cards: [], urls: [], videoUrls: [] }; // urls: of the image previews

  const fmt = (value, digits = 3) => (value === null || value === undefined ? "—" : Number(value).toFixed(digits));

  function setStatus(text, isError = false) {
    const status = $("#status");
    status.textContent = text;
    status.classList.toggle("error", isError);
  }

  // ---- the model being served: its name and the heads a request may rank by

  async function loadModel() {
    try {
      const response = await fetch("model");
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      const info = await response.json();
      $("#model-info").textContent = `model ${info.name} · ${info.num_frames} frames per video · heads: ${info.heads.join(", ")}`;
      const select = $("#head");
      for (const head of info.heads) {
        const option = document.createElement("option");
        option.value = head;
        option.textContent = head === info.head ? `${head} (default)` : head;
        option.selected = head === info.head;
        select.append(option);
      }
    } catch (error) {
      setStatus(`could not read /model: ${error.message}`, true);
    }
  }

  // ---- inputs: drop zones and file pickers

  function setImage(file) {
    for (const url of state.urls) URL.revokeObjectURL(url);
    state.urls = [];
    state.image = file || null;
    const preview = $("#image-preview");
    if (state.image) {
      const url = URL.createObjectURL(state.image);
      state.urls.push(url);
      preview.src = url;
      preview.hidden = false;
      $("#image-name").textContent = state.image.name;
    } else {
      preview.hidden = true;
      preview.removeAttribute("src");
      $("#image-name").textContent = "";
    }
    refreshInputs();
  }

  function addVideos(files) {
    state.videos.push(...files);
    refreshInputs();
  }

  function refreshInputs() {
    const list = $("#video-list");
    list.replaceChildren();
    state.videos.forEach((file, i) => {
      const item = document.createElement("li");
      item.textContent = `${file.name} `;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "remove";
      remove.textContent = "×";
      remove.title = `remove ${file.name}`;
      remove.addEventListener("click", (event) => {
        event.preventDefault(); // inside the drop zone's label: do not open the file picker
        state.videos.splice(i, 1);
        refreshInputs();
      });
      item.append(remove);
      list.append(item);
    });
    $("#run").disabled = !(state.image && state.videos.length);
  }

  const isImage = (file) => file.type.startsWith("image/") && file.type !== "image/gif";

  function wireDrop(zone, onFiles) {
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      event.stopPropagation();
      zone.classList.remove("over");
      onFiles([...event.dataTransfer.files]);
    });
  }

  function wireInputs() {
    $("#image-input").addEventListener("change", (event) => setImage(event.target.files[0]));
    $("#video-input").addEventListener("change", (event) => {
      addVideos([...event.target.files]);
      event.target.value = "";
    });
    wireDrop($("#image-drop"), (files) => setImage(files[0]));
    wireDrop($("#video-drop"), addVideos);
    // dropped anywhere else: a still image (not a GIF) is the image, anything else a video
    document.addEventListener("dragover", (event) => event.preventDefault());
    document.addEventListener("drop", (event) => {
      event.preventDefault();
      let files = [...event.dataTransfer.files];
      const still = state.image ? null : files.find(isImage);
      if (still) {
        setImage(still);
        files = files.filter((file) => file !== still);
      }
      addVideos(files);
    });
    $("#inputs").addEventListener("submit", explain);
    $("#map-scale").addEventListener("change", () => state.cards.forEach((card) => (card.dirty = true)));
    $("#clear").addEventListener("click", clearAll);
  }

  function dropCards() {
    for (const card of state.cards) card.video.removeAttribute("src");
    for (const url of state.videoUrls) URL.revokeObjectURL(url);
    Object.assign(state, { cards: [], videoUrls: [] });
  }

  function clearAll() {
    dropCards();
    state.videos = [];
    setImage(null);
    $("#prompt").value = "";
    $("#results").hidden = true;
    $("#cards").replaceChildren();
    setStatus("");
    document.body.dataset.state = "idle";
  }

  // ---- can this browser play a file in a <video>? (Chromium plays H.264, VP8/9, AV1; not GIF, nor .npy)

  function canPlay(file) {
    return new Promise((resolve) => {
      const video = document.createElement("video");
      video.muted = true;
      video.preload = "auto";
      const url = URL.createObjectURL(file);
      const done = (ok) => {
        clearTimeout(timer);
        video.removeAttribute("src");
        video.load();
        URL.revokeObjectURL(url);
        resolve(ok);
      };
      const timer = setTimeout(() => done(false), 5000);
      video.addEventListener("loadeddata", () => done(video.videoWidth > 0), { once: true });
      video.addEventListener("error", () => done(false), { once: true });
      video.src = url;
    });
  }

  // ---- the request

  async function explain(event) {
    event.preventDefault();
    if (!state.image || !state.videos.length) return;
    const videos = [...state.videos];
    const started = performance.now();
    document.body.dataset.state = "working";
    $("#run").disabled = true;
    setStatus(`Checking which of the ${videos.length} videos this browser can play…`);
    const playable = await Promise.all(videos.map(canPlay));
    const form = new FormData();
    form.append("image", state.image);
    for (const file of videos) form.append("videos", file);
    const prompt = $("#prompt").value.trim();
    if (prompt) form.append("prompt", prompt);
    if ($("#head").value) form.append("head", $("#head").value);
    form.append("grid", String(GRID));
    if (playable.includes(false)) form.append("frame_size", String(FRAME_SIZE));

    const ticker = setInterval(() => {
      const seconds = (performance.now() - started) / 1000;
      setStatus(`Explaining ${videos.length} video${videos.length > 1 ? "s" : ""}… ${seconds.toFixed(0)} s`);
    }, 250);
    let response;
    let body = null;
    try {
      response = await fetch("explain", { method: "POST", body: form });
      body = await response.json().catch(() => null);
    } catch (error) {
      clearInterval(ticker);
      return fail(`the request failed: ${error.message}`);
    } finally {
      $("#run").disabled = !(state.image && state.videos.length);
    }
    clearInterval(ticker);
    if (!response.ok) {
      const detail = body && body.detail ? body.detail : response.statusText;
      return fail(`${response.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
    }
    render(body, videos, playable);
    const seconds = (performance.now() - started) / 1000;
    const count = body.videos.length;
    const failed = body.videos.filter((v) => v.error).length;
    const what = failed
      ? `${count - failed} of ${count} videos explained (${failed} could not be)`
      : `${count} video${count > 1 ? "s" : ""} explained`;
    setStatus(`${what} in ${seconds.toFixed(1)} s (${body.model}, ${body.num_frames} frames each).`);
    document.body.dataset.seconds = seconds.toFixed(3);
    document.body.dataset.state = "done";
  }

  function fail(message) {
    setStatus(message, true);
    document.body.dataset.state = "error";
  }

  // ---- the results: the ranking table, then one card per video, best first

  function render(body, files, playable) {
    dropCards();
    const scored = body.videos.find((v) => v.heads);
    const heads = Object.keys(scored ? scored.heads : { [body.head]: null });
    $("#ranking-note").textContent = `by ${body.head}, best first · ${body.image}`;
    const headRow = document.createElement("tr");
    const columns = [["#", "num"], ["video", ""], ...heads.map((h) => [h, "num"]), ["drift from", "num"]];
    for (const [name, cls] of columns) {
      const th = document.createElement("th");
      th.textContent = name;
      th.className = cls + (name === body.head ? " ranked" : "");
      headRow.append(th);
    }
    $("#ranking thead").replaceChildren(headRow);
    const rows = [];
    const cards = [];
    for (const entry of body.videos) {
      const row = document.createElement("tr");
      row.dataset.video = entry.video;
      row.dataset.rank = entry.rank;
      const cell = (text, cls = "") => {
        const td = document.createElement("td");
        td.textContent = text;
        td.className = cls;
        row.append(td);
        return td;
      };
      cell(String(entry.rank), "num");
      const link = document.createElement("a");
      link.href = `#video-${entry.rank}`;
      link.textContent = entry.video;
      cell("").append(link);
      if (entry.error) {
        const td = cell(entry.error, "missing");
        td.colSpan = heads.length + 1;
      } else {
        for (const head of heads) {
          const value = entry.heads[head];
          const td = cell(fmt(value), `num${value === null ? " missing" : ""}${head === body.head ? " ranked" : ""}`);
          td.dataset.head = head;
          if (value === null) td.title = "no value (the text head needs a prompt)";
        }
        cell(entry.onset_frame === null ? "—" : `frame ${entry.onset_frame}`, "num");
      }
      rows.push(row);
      cards.push(makeCard(body, entry, heads, files[entry.index], playable[entry.index]));
    }
    $("#ranking tbody").replaceChildren(...rows);
    $("#cards").replaceChildren(...cards.map((card) => card.root));
    state.cards = cards;
    $("#results").hidden = false;
  }

  function makeCard(body, entry, heads, file, playable) {
    const root = $("#card-template").content.firstElementChild.cloneNode(true);
    root.id = `video-${entry.rank}`;
    root.dataset.video = entry.video;
    $(".rank", root).textContent = `#${entry.rank}`;
    $(".name", root).textContent = entry.video;
    const card = { root, entry, video: $(".video", root), shown: -1, dirty: true };
    if (entry.error) {
      root.classList.add("failed");
      $(".reward", root).textContent = "not scored";
      $(".error", root).textContent = entry.error;
      $(".error", root).hidden = false;
      $(".body", root).hidden = true;
      card.update = () => {};
      return card;
    }
    $(".reward", root).textContent = `${body.head} ${fmt(entry.reward)}`;
    $(".summary", root).textContent = entry.summary;
    const list = $(".heads", root);
    for (const head of heads) {
      const dt = document.createElement("dt");
      dt.textContent = head;
      const dd = document.createElement("dd");
      dd.textContent = fmt(entry.heads[head]);
      dd.dataset.head = head;
      list.append(dt, dd);
    }
    const count = entry.curve.length;
    const seek = $(".seek", root);
    seek.max = String(count - 1);
    card.clock = playable ? videoClock(card.video, file, count) : frameClock(root, entry, count);
    card.times = () => entry.times || card.clock.fallbackTimes();
    const range = mapRange(entry.maps);
    const show = $(".show-map", root);
    $(".toggle", root).hidden = !entry.maps; // a metric with no map of where (only a curve of when)
    show.addEventListener("change", () => (card.dirty = true));
    $(".play", root).addEventListener("click", () => {
      if (card.clock.paused()) card.clock.play();
      else card.clock.pause();
    });
    seek.addEventListener("input", () => card.clock.seek(card.times()[Number(seek.value)]));
    const curve = $(".curve", root);
    curve.addEventListener("click", (event) => {
      const i = curveIndexAt(curve, count, event.offsetX);
      card.clock.pause();
      card.clock.seek(card.times()[i]);
    });
    let lastWidth = 0;
    card.update = (now) => {
      card.clock.tick(now);
      const i = nearest(card.times(), card.clock.time());
      const width = curve.clientWidth;
      $(".play", root).textContent = card.clock.paused() ? "Play" : "Pause";
      if (i === card.shown && !card.dirty && width === lastWidth) return;
      card.shown = i;
      card.dirty = false;
      lastWidth = width;
      card.clock.show(i);
      const scale = $("#map-scale").value === "video" ? range : { low: 0, high: 1 };
      drawMap($(".overlay", root), show.checked && entry.maps ? entry.maps[i] : null, scale);
      drawCurve(curve, entry, i);
      seek.value = String(i);
      const time = card.times()[i];
      $(".frame-label", root).textContent =
        `frame ${entry.frame_indices[i]} · ${time.toFixed(2)} s · reward ${fmt(entry.curve[i], 2)}`;
    };
    // open on the sampled frame that is least consistent with the image: the map is most telling there
    const worst = entry.curve.indexOf(Math.min(...entry.curve));
    card.clock.ready.then(() => card.clock.seek(card.times()[worst]));
    return card;
  }

  // ---- clocks: a <video> the browser plays, or the sampled frames the server sent, drawn on a canvas

  function videoClock(video, file, count) {
    const url = URL.createObjectURL(file);
    state.videoUrls.push(url);
    video.src = url;
    const ready = new Promise((resolve) => {
      if (video.readyState >= 1) resolve();
      else video.addEventListener("loadedmetadata", () => resolve(), { once: true });
    });
    return {
      ready,
      time: () => video.currentTime,
      paused: () => video.paused,
      play: () => video.play(),
      pause: () => video.pause(),
      seek: (t) => {
        video.currentTime = t;
      },
      tick: () => {},
      show: () => {},
      fallbackTimes: () => {
        const duration = Number.isFinite(video.duration) ? video.duration : count / FALLBACK_FPS;
        return Array.from({ length: count }, (_, i) => (i * duration) / count);
      },
    };
  }

  function frameClock(root, entry, count) {
    const video = $(".video", root);
    video.hidden = true;
    const canvas = $(".frames", root);
    canvas.hidden = false;
    if (!entry.frames) {
      $(".error", root).textContent = "this browser cannot play this video, and the server sent no frames";
      $(".error", root).hidden = false;
    }
    const images = (entry.frames || []).map((uri) => {
      const image = new Image();
      image.src = uri;
      return image;
    });
    const ready = Promise.all(images.map((image) => image.decode().catch(() => null))).then(() => {
      if (images.length) {
        canvas.width = images[0].naturalWidth;
        canvas.height = images[0].naturalHeight;
      }
    });
    const times = entry.times || Array.from({ length: count }, (_, i) => i / FALLBACK_FPS);
    const step = count > 1 ? (times[count - 1] - times[0]) / (count - 1) : 1 / FALLBACK_FPS;
    const duration = times[count - 1] + step;
    let t = times[0];
    let playing = false;
    let last = null;
    let drawn = -1;
    return {
      ready,
      time: () => t,
      paused: () => !playing,
      play: () => {
        playing = true;
        last = null;
      },
      pause: () => {
        playing = false;
      },
      seek: (value) => {
        t = value;
      },
      tick: (now) => {
        if (playing) {
          if (last !== null) t = times[0] + ((t - times[0] + (now - last) / 1000) % (duration - times[0]));
          last = now;
        }
      },
      show: (i) => {
        const image = images[i];
        if (!image || !image.complete || !image.naturalWidth || i === drawn) return;
        canvas.getContext("2d").drawImage(image, 0, 0, canvas.width, canvas.height);
        drawn = i;
      },
      fallbackTimes: () => times,
    };
  }

  function nearest(times, t) {
    let best = 0;
    for (let i = 1; i < times.length; i++) if (Math.abs(times[i] - t) < Math.abs(times[best] - t)) best = i;
    return best;
  }

  // ---- drawing

  function fitCanvas(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    return ratio;
  }

  // the lowest and highest value of a video's maps (all its frames): the "each video's own range" colour scale
  function mapRange(maps) {
    let low = Infinity;
    let high = -Infinity;
    for (const frame of maps || []) {
      for (const row of frame) {
        for (const v of row) {
          low = Math.min(low, v);
          high = Math.max(high, v);
        }
      }
    }
    return { low, high };
  }

  // inconsistency on `scale`: its low end (as in the image) clear up to a tenth of the way, then yellow to red (its
  // high end, most changed), more opaque; a scale of no width draws nothing
  function heat(value, scale) {
    const width = scale.high - scale.low;
    const v = width > 1e-6 ? Math.min(1, Math.max(0, (value - scale.low) / width)) : 0;
    const alpha = v < 0.1 ? 0 : Math.max(1, Math.round(255 * 0.75 * v * v)); // the most changed patches stand out
    return [235, Math.round(215 * (1 - v)), Math.round(40 * (1 - v)), alpha];
  }

  function drawMap(canvas, map, scale) {
    fitCanvas(canvas);
    const context = canvas.getContext("2d");
    context.clearRect(0, 0, canvas.width, canvas.height);
    if (!map || !map.length) return;
    const rows = map.length;
    const cols = map[0].length;
    const cells = document.createElement("canvas");
    cells.width = cols;
    cells.height = rows;
    const pixels = cells.getContext("2d").createImageData(cols, rows);
    for (let y = 0; y < rows; y++) {
      for (let x = 0; x < cols; x++) pixels.data.set(heat(map[y][x], scale), 4 * (y * cols + x));
    }
    cells.getContext("2d").putImageData(pixels, 0, 0);
    context.imageSmoothingEnabled = true;
    context.imageSmoothingQuality = "high";
    context.drawImage(cells, 0, 0, canvas.width, canvas.height);
  }

  const CURVE_PAD = { left: 48, right: 12, top: 14, bottom: 30 }; // CSS pixels

  function curveIndexAt(canvas, count, offsetX) {
    const width = canvas.clientWidth - CURVE_PAD.left - CURVE_PAD.right;
    const x = (offsetX - CURVE_PAD.left) / Math.max(1, width);
    return Math.min(count - 1, Math.max(0, Math.round(x * (count - 1))));
  }

  function drawCurve(canvas, entry, current) {
    const ratio = fitCanvas(canvas);
    const context = canvas.getContext("2d");
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    const width = canvas.width / ratio;
    const height = canvas.height / ratio;
    context.clearRect(0, 0, width, height);
    context.fillStyle = "#ffffff";
    context.fillRect(0, 0, width, height);
    const values = entry.curve;
    const count = values.length;
    let low = Math.min(...values);
    let high = Math.max(...values);
    if (high - low < 1e-6) {
      low -= 0.5;
      high += 0.5;
    }
    const margin = 0.08 * (high - low);
    low -= margin;
    high += margin;
    const plotW = width - CURVE_PAD.left - CURVE_PAD.right;
    const plotH = height - CURVE_PAD.top - CURVE_PAD.bottom;
    const x = (i) => CURVE_PAD.left + (count > 1 ? (i / (count - 1)) * plotW : plotW / 2);
    const y = (v) => CURVE_PAD.top + (1 - (v - low) / (high - low)) * plotH;

    context.font = "11px system-ui, sans-serif";
    context.lineWidth = 1;
    context.strokeStyle = "#e3e7ef";
    context.fillStyle = "#5b6478";
    context.textAlign = "right";
    context.textBaseline = "middle";
    for (let k = 0; k <= 3; k++) {
      const v = low + ((high - low) * k) / 3;
      context.beginPath();
      context.moveTo(CURVE_PAD.left, y(v));
      context.lineTo(width - CURVE_PAD.right, y(v));
      context.stroke();
      context.fillText(v.toFixed(2), CURVE_PAD.left - 6, y(v));
    }
    context.textAlign = "center";
    context.textBaseline = "top";
    const labelEvery = Math.max(1, Math.ceil(count / 8));
    for (let i = 0; i < count; i += labelEvery) context.fillText(String(entry.frame_indices[i]), x(i), height - 26);
    context.fillText("video frame · reward of each sampled frame (higher = more consistent)", width / 2, height - 13);

    if (entry.onset !== null && entry.onset !== undefined) {
      context.save();
      context.strokeStyle = "#c0392b";
      context.setLineDash([4, 3]);
      context.beginPath();
      context.moveTo(x(entry.onset), CURVE_PAD.top);
      context.lineTo(x(entry.onset), CURVE_PAD.top + plotH);
      context.stroke();
      context.restore();
      context.fillStyle = "#c0392b";
      context.textAlign = "left";
      context.textBaseline = "top";
      context.fillText("drift starts", x(entry.onset) + 4, CURVE_PAD.top);
    }

    context.strokeStyle = "#2f5fd0";
    context.lineWidth = 2;
    context.beginPath();
    values.forEach((v, i) => (i ? context.lineTo(x(i), y(v)) : context.moveTo(x(i), y(v))));
    context.stroke();
    context.fillStyle = "#2f5fd0";
    values.forEach((v, i) => {
      context.beginPath();
      context.arc(x(i), y(v), 2.5, 0, 2 * Math.PI);
      context.fill();
    });

    context.strokeStyle = "#1d2330";
    context.lineWidth = 1;
    context.beginPath();
    context.moveTo(x(current), CURVE_PAD.top);
    context.lineTo(x(current), CURVE_PAD.top + plotH);
    context.stroke();
    context.fillStyle = "#1d2330";
    context.beginPath();
    context.arc(x(current), y(values[current]), 4.5, 0, 2 * Math.PI);
    context.fill();
  }

  function loop(now) {
    for (const card of state.cards) card.update(now);
    requestAnimationFrame(loop);
  }

  document.body.dataset.state = "idle";
  wireInputs();
  loadModel();
  requestAnimationFrame(loop);
})();
