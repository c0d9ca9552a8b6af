"""The one inline script every page carries: chart readouts, sortable tables, the data filter, the network view.

It never turns data into markup: every text it shows goes through `textContent`, every image source must be a
PNG data URL, so a run name or class name holding `<script>` stays text (the browser tests feed such names).
"""

SCRIPT = r"""
(function () {
  'use strict';
  function each(selector, root, fn) { Array.prototype.forEach.call((root || document).querySelectorAll(selector), fn); }

  // Charts: hovering a mark writes its value under the chart.
  each('figure.chart', null, function (figure) {
    var readout = figure.querySelector('.readout');
    each('circle.mark', figure, function (mark) {
      mark.addEventListener('mouseenter', function () {
        readout.textContent = mark.getAttribute('data-label');
        mark.classList.add('hot');
      });
      mark.addEventListener('mouseleave', function () { mark.classList.remove('hot'); });
    });
  });

  // Tables: a click on a header sorts by that column (numbers by data-value; missing values last).
  function sortKey(row, column) {
    var cell = row.cells[column];
    if (!cell) { return null; }
    var value = cell.getAttribute('data-value');
    if (value !== null) { var number = parseFloat(value); return isNaN(number) ? null : number; }
    return cell.textContent.trim().toLowerCase();
  }
  each('table.sortable', null, function (table) {
    each('thead th', table, function (header, column) {
      header.addEventListener('click', function () {
        var descending = header.getAttribute('data-order') === 'asc';
        each('thead th', table, function (other) { other.removeAttribute('data-order'); });
        header.setAttribute('data-order', descending ? 'desc' : 'asc');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = sortKey(a, column), y = sortKey(b, column);
          if (x === null || y === null) { return (x === null) - (y === null); }
          var order = x < y ? -1 : (x > y ? 1 : 0);
          return descending ? -order : order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });

  // Comparison page: show one data spec's section, or all.
  var filter = document.getElementById('data-filter');
  if (filter) {
    filter.addEventListener('change', function () {
      each('section.data', null, function (section) {
        section.hidden = filter.value !== '' && section.getAttribute('data-spec') !== filter.value;
      });
    });
  }

  // Network view: pick an image, click a stage, hover a feature map.
  var source = document.getElementById('network-data');
  var view = document.getElementById('network-view');
  if (!source || !view) { return; }
  var data = JSON.parse(source.textContent);
  var state = {image: 0, stage: 0};
  var PNG = 'data:image/png;base64,';
  function image(base64, alt, size) {
    var element = document.createElement('img');
    if (typeof base64 === 'string' && /^[A-Za-z0-9+\/=]*$/.test(base64)) { element.src = PNG + base64; }
    element.alt = alt;
    element.width = size;
    element.height = size;
    return element;
  }
  function clear(element) { while (element.firstChild) { element.removeChild(element.firstChild); } }
  var pickers = view.querySelector('.net-images');
  var stages = view.querySelector('.net-stages');
  var maps = view.querySelector('.net-maps');
  var stats = view.querySelector('.net-stats');
  function render() {
    each('button', pickers, function (button, index) { button.classList.toggle('active', index === state.image); });
    each('button', stages, function (button, index) { button.classList.toggle('active', index === state.stage); });
    clear(maps);
    var stage = data.stages[state.stage];
    var picked = data.images[state.image].stages[state.stage];
    var heading = document.createElement('p');
    heading.textContent = stage.name + ': ' + stage.shape.join(' x ') + ' (' + picked.length + ' of ' +
      stage.shape[0] + ' channels, most active first)';
    maps.appendChild(heading);
    picked.forEach(function (entry) {
      var element = image(entry.png, 'channel ' + entry.channel, 56);
      element.className = 'fmap';
      element.addEventListener('mouseenter', function () {
        stats.textContent = stage.name + ', channel ' + entry.channel + ': mean ' + entry.mean.toPrecision(3) +
          ', std ' + entry.std.toPrecision(3) + ', min ' + entry.min.toPrecision(3) + ', max ' +
          entry.max.toPrecision(3) + ', active ' + (100 * entry.active).toFixed(0) + ' %';
      });
      maps.appendChild(element);
    });
    stats.textContent = 'hover a map for its channel statistics';
  }
  data.images.forEach(function (entry, index) {
    var button = document.createElement('button');
    button.type = 'button';
    button.appendChild(image(entry.input, 'input ' + index, 48));
    var caption = document.createElement('span');
    caption.textContent = entry.label;
    button.appendChild(caption);
    button.addEventListener('click', function () { state.image = index; render(); });
    pickers.appendChild(button);
  });
  data.stages.forEach(function (stage, index) {
    if (index > 0) {
      var arrow = document.createElement('span');
      arrow.textContent = '\u2192';
      stages.appendChild(arrow);
    }
    var button = document.createElement('button');
    button.type = 'button';
    button.className = 'stage';
    button.textContent = stage.name + ' ' + stage.shape.join('x');
    button.addEventListener('click', function () { state.stage = index; render(); });
    stages.appendChild(button);
  });
  render();
})();
"""
