import os
import sys; os.chdir(sys.argv[1] if len(sys.argv) > 1 else ".")
def patch(path, old, new, count=1):
    s = open(path).read()
    assert s.count(old) == count, (path, old, s.count(old))
    s = s.replace(old, new)
    open(path, "w").write(s)
def imp(path, anchor):
    s = open(path).read(); s = s.replace(anchor, anchor + "from univrs import _probe as _P\n", 1); open(path, "w").write(s)
patch("univrs/net/wsdirect.py", "    wire: bytes = conn._wsproto.send(BytesMessage(data=message))\n    sent = _write_now(conn._stream, wire)\n",
      "    wire: bytes = conn._wsproto.send(BytesMessage(data=message))\n    _P.mark('w0', len(wire))\n    sent = _write_now(conn._stream, wire)\n    _P.mark('w1', len(wire))\n")
patch("univrs/net/wsdirect.py", '        """The reader task\'s hand-off of one complete message."""\n',
      '        """The reader task\'s hand-off of one complete message."""\n        _P.mark("r", len(message))\n')
imp("univrs/net/wsdirect.py", "\nimport attrs\n")
patch("univrs/runtime/writer.py", "            fn, done = job\n            result, seconds = _capture(fn)\n",
      "            fn, done = job\n            _P.mark('t0')\n            result, seconds = _capture(fn)\n            _P.mark('t1')\n")
patch("univrs/runtime/writer.py", '        """Queue ``job`` behind everything submitted before; start it if the writer is idle."""\n',
      '        """Queue ``job`` behind everything submitted before; start it if the writer is idle."""\n        _P.mark("sub")\n')
imp("univrs/runtime/writer.py", "\nimport attrs\n")
patch("univrs/runtime/step.py", "                if ev is not None:\n                    if self._persisted",
      "                _P.mark('step', type(ev).__name__)\n                if ev is not None:\n                    if self._persisted")
patch("univrs/runtime/step.py", "        self._persisted.append(Persisted(index=index, term=term, hard_state=hard_state))\n",
      "        _P.mark('persisted', index)\n        self._persisted.append(Persisted(index=index, term=term, hard_state=hard_state))\n")
patch("univrs/runtime/step.py", "    def apply_committed(self, entries: tuple[Entry, ...]) -> None:\n",
      "    def apply_committed(self, entries: tuple[Entry, ...]) -> None:\n        _P.mark('commit', entries[-1].index)\n")
patch("univrs/runtime/step.py", "            self._applied_on_step = self._applier.applied_index\n",
      "            self._applied_on_step = self._applier.applied_index\n            _P.mark('applied')\n")
patch("univrs/runtime/step.py", "    def send(self, msg: Message) -> None:\n", "    def send(self, msg: Message) -> None:\n        _P.mark('send', type(msg).__name__)\n")
imp("univrs/runtime/step.py", "\nimport trio\n")
patch("univrs/api/fast.py", "            if inline.due(trio.current_time()):\n                inline.settle()\n",
      "            _P.mark('wr')\n            if inline.due(trio.current_time()):\n                inline.settle()\n")
patch("univrs/api/fast.py", "        answered: set[int] = set()\n\n        def send(done",
      "        answered: set[int] = set()\n        _P.mark('inline')\n\n        def send(done", 2)
imp("univrs/api/fast.py", "\nimport trio\n")
# the frames written from the caller's step (wsdirect.write_whole_nowait)
patch("univrs/net/wsdirect.py", """        sent = _write(sock.fileno(), wire)
""", """        _P.mark('w0', len(wire))
        sent = _write(sock.fileno(), wire)
        _P.mark('w1', len(wire))
""")
