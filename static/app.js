// chinwag's small chat page: the tutorial's page, made safe.
//
// It speaks the tutorial protocol in camelCase (addUser/sendChat in, updateChat/updateUsers
// out). Every name and message is rendered with textContent, never as HTML.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const joinForm = $("join");
  const nameInput = $("name");
  const chat = $("chat");
  const users = $("users");
  const conversation = $("conversation");
  const composer = $("composer");
  const messageInput = $("data");
  const status = $("status");

  const socket = io({ autoConnect: true });
  let myName = null;

  function showStatus(text) {
    status.textContent = text;
  }

  function appendLine(speaker, text) {
    const line = document.createElement("li");
    const who = document.createElement("b");
    who.textContent = String(speaker) + ":";
    line.append(who, " ", String(text));
    if (speaker === "Server") line.className = "server";
    conversation.append(line);
    line.scrollIntoView({ block: "end" });
  }

  socket.on("connect", () => {
    showStatus("connected");
    // After a reconnect the server has forgotten us: add ourselves again.
    if (myName !== null) socket.emit("addUser", myName);
  });
  socket.on("disconnect", () => showStatus("disconnected, reconnecting…"));
  socket.on("connect_error", () => showStatus("cannot reach the server, retrying…"));

  socket.on("updateChat", (speaker, text) => {
    appendLine(speaker, text);
    if (speaker === "Server" && text === "you have connected") {
      joinForm.hidden = true;
      chat.hidden = false;
      messageInput.focus();
    }
  });

  socket.on("updateUsers", (map) => {
    users.replaceChildren(
      ...Object.keys(map || {}).map((name) => {
        const item = document.createElement("li");
        item.textContent = name;
        return item;
      }),
    );
  });

  joinForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = nameInput.value.trim();
    if (!name) return;
    myName = name;
    socket.emit("addUser", name);
    // The conversation shows the server's answer (a welcome or the reason for a refusal).
    chat.hidden = false;
  });

  // A form submit covers both the Send button and Enter in the input.
  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = messageInput.value;
    if (!text) return;
    messageInput.value = "";
    socket.emit("sendChat", text);
  });
})();
