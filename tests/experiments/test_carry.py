"""experiments.carry: bad input. (Pack, unpack and the exact resume after it:
tests/experiments/test_harness.py::test_carried_state_resumes_on_another_machine_to_the_uninterrupted_weights.)"""

from experiments import carry


def test_bad_input_is_one_error_line_and_exit_2(tmp_path, capsys):
  runs, carried = tmp_path / "runs", tmp_path / "carried"
  assert carry.main([f"--logdir={runs}", f"--carry_dir={carried}"]) == 2
  assert capsys.readouterr().err.strip().splitlines() == [f"error: --logdir {runs} is not a folder"]
  runs.mkdir()
  assert carry.main([f"--logdir={runs}", f"--carry_dir={carried}"]) == 2  # no runs in it
  assert capsys.readouterr().err.strip() == f"error: no status.json under {runs}"
  (runs / "row").mkdir()
  (runs / "row" / "status.json").write_text('{"step": 3}')
  (tmp_path / "file").write_text("")
  assert carry.main([f"--logdir={runs}", f"--carry_dir={tmp_path / 'file'}"]) == 2
  assert capsys.readouterr().err.strip() == f"error: --carry_dir {tmp_path / 'file'} is a file"
  # Packing replaces the run's folder in --carry_dir: the two folders must be apart.
  for logdir, carry_dir in [(runs, runs), (runs, runs / "carried"), (runs / "row", runs)]:
    assert carry.main([f"--logdir={logdir}", f"--carry_dir={carry_dir}"]) == 2
    assert capsys.readouterr().err.strip() == (
      f"error: --logdir {logdir} and --carry_dir {carry_dir} must not contain each other"
    )
  assert (runs / "row" / "status.json").exists()
  assert carry.main([f"--logdir={runs}"]) == 2  # --carry_dir is required
  assert capsys.readouterr().err.strip() == "error: --carry_dir is required"
