/* policy-arena leaderboard: sort, search and the open-weights filter in place, without a reload.
   Everything also works without this script: the header links and the form send query parameters that the
   server applies (view, q, open, sort, dir). Served from /static/ (the CSP allows scripts from this origin only). */
(function () {
  "use strict";
  var NUMERIC = { rank: 1, score: 1, n_comparisons: 1, n_labs: 1, win_rate: 1, mean_progress: 1 };
  var DESCENDING_FIRST = { score: 1, n_comparisons: 1, n_labs: 1, win_rate: 1, mean_progress: 1, last_evaluated: 1 };
  var params = new URLSearchParams(window.location.search);

  function value(row, key) {
    var raw = row.getAttribute("data-" + key) || "";
    return NUMERIC[key] ? parseFloat(raw) : raw;
  }

  function compare(key, descending) {
    return function (a, b) {
      var x = value(a, key), y = value(b, key), order = 0;
      if (x < y) order = -1; else if (x > y) order = 1;
      if (order === 0 && key === "rank") return value(b, "score") - value(a, "score");
      return descending ? -order : order;
    };
  }

  function sortTable(table, key, descending) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(compare(key, descending));
    rows.forEach(function (row) { body.appendChild(row); });
    table.querySelectorAll("th[data-sort-key]").forEach(function (th) {
      var active = th.getAttribute("data-sort-key") === key;
      th.setAttribute("aria-sort", active ? (descending ? "descending" : "ascending") : "none");
    });
  }

  function syncUrl() {
    var query = params.toString();
    window.history.replaceState(null, "", window.location.pathname + (query ? "?" + query : ""));
  }

  var tables = document.querySelectorAll("table.ratings");
  tables.forEach(function (table) {
    table.querySelectorAll("th[data-sort-key] a.sort").forEach(function (link) {
      link.addEventListener("click", function (event) {
        event.preventDefault();
        var th = link.parentNode, key = th.getAttribute("data-sort-key");
        var current = th.getAttribute("aria-sort");
        var descending = current === "none" ? !!DESCENDING_FIRST[key] : current === "ascending";
        tables.forEach(function (t) { sortTable(t, key, descending); });
        if (key === "rank" && !descending) { params.delete("sort"); params.delete("dir"); }
        else { params.set("sort", key); params.set("dir", descending ? "desc" : "asc"); }
        syncUrl();
      });
    });
  });

  var search = document.getElementById("board-search");
  var openOnly = document.getElementById("board-open");
  var shown = document.getElementById("board-shown");
  var apply = document.getElementById("board-apply");
  if (apply) apply.hidden = true;

  function filter() {
    var needle = search ? search.value.trim().toLowerCase() : "";
    var open = openOnly && openOnly.checked;
    var total = 0, visible = 0;
    tables.forEach(function (table) {
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        var keep = (!needle || (row.getAttribute("data-search") || "").indexOf(needle) !== -1) &&
          (!open || row.getAttribute("data-open") === "1");
        row.hidden = !keep;
        total += 1;
        if (keep) visible += 1;
      });
    });
    if (shown) shown.textContent = (needle || open) ? "Showing " + visible + " of " + total + " policies" : "";
    if (needle) params.set("q", needle); else params.delete("q");
    if (open) params.set("open", "1"); else params.delete("open");
    syncUrl();
  }

  if (search) search.addEventListener("input", filter);
  if (openOnly) openOnly.addEventListener("change", filter);
  var form = document.getElementById("board-controls");
  if (form) form.addEventListener("submit", function (event) { event.preventDefault(); filter(); });
  document.querySelectorAll("#board-tabs a.tab").forEach(function (tab) {
    tab.addEventListener("click", function () {
      // carry the current search, filter and order into the other view
      var target = new URL(tab.href, window.location.href);
      ["q", "open", "sort", "dir"].forEach(function (name) {
        if (params.has(name)) target.searchParams.set(name, params.get(name));
        else target.searchParams.delete(name);
      });
      tab.href = target.toString();
    });
  });
}());
