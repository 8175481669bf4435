// Times in the browser's time zone, to the second; the stored time stays in
// the title (shown on hover). Without script the server's UTC text is shown.
(function () {
  function pad(n) { return (n < 10 ? '0' : '') + n; }
  var els = document.querySelectorAll('time[datetime]');
  for (var i = 0; i < els.length; i++) {
    var d = new Date(els[i].getAttribute('datetime'));
    if (isNaN(d.getTime())) { continue; }
    els[i].textContent = d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) +
      ' ' + pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }
})();
