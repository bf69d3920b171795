// One control per camera drives both videos of a session page (A and B side by side): play and pause act on
// both; the slider seeks both to the same position (a fraction of the shorter video); B follows A's clock.
"use strict";
(function () {
  function setup(group) {
    var videos = Array.prototype.slice.call(group.querySelectorAll("video"));
    var play = group.querySelector(".sync-play");
    var seek = group.querySelector(".sync-seek");
    var clock = group.querySelector(".sync-time");
    if (!videos.length || !play || !seek) return;
    var dragging = false;

    function duration() {
      var d = videos.map(function (v) { return v.duration; }).filter(isFinite);
      return d.length ? Math.min.apply(null, d) : 0;
    }
    function show() {
      var t = videos[0].currentTime;
      var d = duration();
      if (!dragging && d > 0) seek.value = String(Math.round(1000 * Math.min(t / d, 1)));
      if (clock) clock.textContent = t.toFixed(1) + " s";
      play.textContent = videos[0].paused ? "Play" : "Pause";
    }
    function seekAll(t) {
      videos.forEach(function (v) { v.currentTime = t; });
    }
    play.addEventListener("click", function () {
      var start = videos[0].paused;
      videos.forEach(function (v) {
        if (start) {
          var p = v.play();
          if (p && p.catch) p.catch(function () {});
        } else {
          v.pause();
        }
      });
      show();
    });
    seek.addEventListener("input", function () {
      dragging = true;
      seekAll(duration() * Number(seek.value) / 1000);
    });
    seek.addEventListener("change", function () {
      dragging = false;
      seekAll(duration() * Number(seek.value) / 1000);
      show();
    });
    videos[0].addEventListener("timeupdate", function () {
      // Keep the others on A's clock when they drift by more than a frame.
      videos.slice(1).forEach(function (v) {
        if (!v.seeking && Math.abs(v.currentTime - videos[0].currentTime) > 0.1) v.currentTime = videos[0].currentTime;
      });
      show();
    });
    videos.forEach(function (v) {
      v.addEventListener("ended", function () { videos.forEach(function (o) { o.pause(); }); show(); });
      v.addEventListener("loadedmetadata", show);
    });
    show();
  }
  Array.prototype.forEach.call(document.querySelectorAll(".sync-group"), setup);
})();
