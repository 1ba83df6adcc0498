"""The project's lifecycle in the window: new (from a capture folder, a dialog or a drop), open (off the UI thread,
offering the backup of a damaged project file), save (each workspace's state under its name), autosave, recent
projects and the unsaved-changes question.  A mixin of MainWindow, which provides the host side (``run_job``,
``show_error``, ``ask``, the workspaces and the status bar)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QDialog, QFileDialog, QMessageBox

from app.core.jobs import EXPORT, SCENE
from app.core.project_session import ProjectSession, check_dataset_folder, create_project, open_job, unique_folder
from app.dialogs import NewProjectDialog
from engine.core.errors import UserInputError


class ProjectLifecycle:
    """New, open, save and autosave of the one project the window holds (``session``, ``dirty``)."""

    session: ProjectSession | None
    dirty: bool

    def new_project_dialog(self, data: str = "") -> None:
        if not self._maybe_save():
            return
        dialog = NewProjectDialog(data, self.projects_root, self)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.new_project(dialog.data_edit.text().strip(), dialog.root_edit.text().strip(),
                             dialog.downscale.value())

    def new_project(self, data: str | Path, root: str | Path | None = None, downscale: float = 1.0,
                    then: Callable[[], None] | None = None) -> bool:
        """Create a project for the capture ``data`` and open it; a clear error when it is not a capture."""
        try:
            root = create_project(data, root or unique_folder(self.projects_root, Path(data).name), downscale)
        except UserInputError as exc:
            self.show_error(str(exc))
            return False
        self.log.log(f"new project {root} for the capture {data}")
        self.open_project(root, check_unsaved=False, then=then)
        return True

    def start_demo(self) -> None:
        """Build the procedural demo capture, start a project on it and train (the ``demo`` command)."""
        from engine.scene.procedural import DemoSceneConfig, write_demo_dataset

        data = write_demo_dataset(self.projects_root / "demo-data", DemoSceneConfig())
        self.scene.edit_panel.instruction_edit.setText("make it look like a bronze statue")
        self.new_project(data, unique_folder(self.projects_root, "demo"), then=self.scene.train)

    def open_project_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a Retouch3D project", str(self.projects_root))
        if folder:
            self.open_project(folder)

    def open_project(self, root: str | Path, check_unsaved: bool = True,
                     then: Callable[[], None] | None = None) -> None:
        """Load a project off the UI thread; on success its field, edits and settings are shown (then ``then``)."""
        blocker = self.lanes.blocker(frozenset({SCENE, EXPORT}))
        if blocker is not None:
            self.show_error(f"Finish or cancel the {blocker.kind} job before opening another project.")
            return
        if check_unsaved and not self._maybe_save():
            return
        root = Path(root)
        from engine.core.project import Project

        project = Project(root)
        try:
            project.read_manifest()
        except UserInputError as exc:
            if project.exists() and project._backup_readable() and self.ask(
                    "Damaged project", f"{exc}\n\nRestore the last good copy of the project file?"):
                project.restore_backup()
                self.log.log(f"{project.manifest_path}: restored from {project.backup_path.name}", "warning")
            else:
                self.show_error(str(exc))
                return
        result: dict = {}
        self.statusBar().showMessage(f"Opening {root}…")

        def done(ok: bool) -> None:
            if ok:
                self._show_session(result["session"])
                if then is not None:
                    then()

        self.run_job("open", f"Opening {root.name}", lambda cancel: open_job(root, result),
                     frozenset({SCENE, EXPORT}), on_done=done)

    def _show_session(self, session: ProjectSession) -> None:
        self.session = session
        self.settings.add_recent(session.root)
        for warning in session.warnings:
            self.log.log(warning, "warning")
        self.scene.show_session(session)
        self.tabs.setCurrentWidget(self.scene)
        self.dirty = False
        self.statusBar().showMessage(f"{session.root}: " + ("trained field loaded" if session.trained else
                                                            "not trained yet — press Train"))
        self.log.log(f"opened {session.root}")
        self._update_actions()

    def app_state(self) -> dict:
        """What the window saves in the project: each workspace's state under its name (JSON-friendly)."""
        return {workspace.name: workspace.state() for workspace in self.workspaces}

    def save_project(self) -> bool:
        if self.session is None:
            return True
        try:
            self.session.save(self.app_state())
        except (OSError, UserInputError) as exc:
            self.show_error(f"Could not save the project: {exc}")
            return False
        self.dirty = False
        self.statusBar().showMessage(f"Saved {self.session.root}", 3000)
        self._update_actions()
        return True

    def _autosave(self) -> None:
        if self.dirty and self.session is not None:
            self.save_project()
            self.log.log("autosaved")

    def _apply_autosave_interval(self) -> None:
        minutes = self.settings.autosave_minutes
        if minutes > 0:
            self._autosave_timer.start(int(minutes * 60_000))
        else:
            self._autosave_timer.stop()

    def _maybe_save(self) -> bool:
        """Ask about unsaved changes; False when the user cancels what they were doing."""
        if not self.dirty or self.session is None:
            return True
        answer = self.ask_save()
        if answer == QMessageBox.StandardButton.Save:
            return self.save_project()
        return answer == QMessageBox.StandardButton.Discard

    def ask_save(self) -> QMessageBox.StandardButton:
        """The unsaved-changes question (tests replace it)."""
        return QMessageBox.question(self, "Unsaved changes", f"Save the changes to {self.session.name}?",
                                    QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
                                    | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Save)

    def ask(self, title: str, text: str) -> bool:
        """A yes/no question (tests replace it)."""
        return QMessageBox.question(self, title, text) == QMessageBox.StandardButton.Yes

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.settings.recent_projects
        for path in recent:
            self.recent_menu.addAction(path, lambda p=path: self.open_project(p))
        if not recent:
            self.recent_menu.addAction("(none)").setEnabled(False)

    # ------------------------------------------------------------------------------ drag and drop
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt override
        urls = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if urls:
            event.acceptProposedAction()
            self.open_dropped(urls[0])

    def open_dropped(self, path: str | Path) -> None:
        """A dropped project folder opens; a dropped capture folder starts a new project."""
        path = Path(path)
        from engine.core.project import MANIFEST_NAME

        if (path / MANIFEST_NAME).exists():
            self.open_project(path)
            return
        try:
            check_dataset_folder(path)
        except UserInputError as exc:
            self.show_error(str(exc))
            return
        if self._maybe_save():
            self.new_project(path)
