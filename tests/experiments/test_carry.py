"""experiments.carry: bad input. (Pack, unpack and the exact resume after it:
tests/experiments/test_harness.py::test_carried_state_resumes_on_another_machine_to_the_uninterrupted_weights.)"""

from experiments import carry


def test_bad_input_is_one_error_line_and_exit_2(tmp_path, capsys):
  assert carry.main([f"--logdir={tmp_path / 'missing'}", f"--carry_dir={tmp_path / 'c'}"]) == 2
  assert capsys.readouterr().err.strip().splitlines() == [
      f"error: --logdir {tmp_path / 'missing'} is not a folder"]
  assert carry.main([f"--logdir={tmp_path}", f"--carry_dir={tmp_path / 'c'}"]) == 2  # no runs
  assert capsys.readouterr().err.strip() == f"error: no status.json under {tmp_path}"
  (tmp_path / "file").write_text("")
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "status.json").write_text('{"step": 3}')
  assert carry.main([f"--logdir={tmp_path / 'run'}", f"--carry_dir={tmp_path / 'file'}"]) == 2
  assert capsys.readouterr().err.strip() == f"error: --carry_dir {tmp_path / 'file'} is a file"
  assert carry.main([f"--logdir={tmp_path}"]) == 2  # --carry_dir is required
  assert capsys.readouterr().err.strip() == "error: --carry_dir is required"
