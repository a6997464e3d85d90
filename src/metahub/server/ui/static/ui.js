// MetaHub admin UI: progressive enhancements only; every page works without script.
"use strict";

function renumberFeatures(list) {
  list.querySelectorAll(".feature-row").forEach(function (row, i) {
    var label = row.querySelector("label");
    var input = row.querySelector("input");
    input.id = "feature-" + i;
    label.htmlFor = input.id;
    label.textContent = "Feature " + (i + 1);
    var hidden = row.querySelector("[data-remove-feature] .visually-hidden");
    if (hidden) hidden.textContent = " feature " + (i + 1);
  });
}

function setUpFeaturePicker(picker) {
  var list = picker.querySelector("[data-feature-rows]");
  var add = picker.querySelector("[data-add-feature]");
  var template = document.getElementById("feature-row-template");
  if (!list || !add || !template) return;
  add.hidden = false;
  list.querySelectorAll("[data-remove-feature]").forEach(function (b) { b.hidden = false; });
  add.addEventListener("click", function () {
    list.appendChild(template.content.cloneNode(true));
    renumberFeatures(list);
    var inputs = list.querySelectorAll("input");
    inputs[inputs.length - 1].focus();
  });
  list.addEventListener("click", function (event) {
    var button = event.target.closest("[data-remove-feature]");
    if (!button) return;
    var row = button.closest(".feature-row");
    if (list.querySelectorAll(".feature-row").length > 1) {
      row.remove();
    } else {
      row.querySelector("input").value = "";
    }
    renumberFeatures(list);
    add.focus();
  });
}

function copyText(text, button) {
  function done(ok) {
    var label = button.firstChild;
    var original = label.textContent;
    label.textContent = ok ? "Copied" : "Select and copy";
    setTimeout(function () { label.textContent = original; }, 2000);
  }
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(false); });
  } else {
    done(false);
  }
}

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-feature-picker]").forEach(setUpFeaturePicker);

  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy"));
      var range = document.createRange();
      range.selectNodeContents(source);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      copyText(source.textContent, button);
    });
  });

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });

  var problem = document.querySelector("#form-errors");
  if (problem) problem.focus();
});
