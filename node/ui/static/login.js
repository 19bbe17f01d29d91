// The login page: the one-time token is in the URL fragment (never sent to a server, so never in a log
// or a Referer). Drop it from the address bar, then post it once to get the session cookie.
(function () {
  "use strict";
  var token = window.location.hash.slice(1);
  if (!token) {
    var status = document.getElementById("status");
    if (status) { status.textContent = "Open this page with `swapmeet ui`, or paste a login token below."; }
    return;
  }
  window.history.replaceState(null, "", window.location.pathname);
  var form = document.getElementById("login");
  form.elements.token.value = decodeURIComponent(token);
  form.submit();
})();
