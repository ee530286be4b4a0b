"""The handouts' tasks: each lab's TODO regions, in the order a student writes
them, and the tests that check each task.

A task is done when its tests pass; its tests need the regions of that task
and of the tasks before it, never a later one, so a student can write task 1,
check it, then go on (tests/test_starter.py proves it on the kit's own
starter). ``python -m pytest --grade-task lab1.2`` runs one task's tests;
``python -m tests.grading --write-manifest`` writes each test's task into
tests/expected_tests.json and each handout's list of tasks from it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    lab: str                      # lab1 or lab2: the manifest's category
    number: int
    title: str
    regions: tuple[str, ...]      # "file::Class.function" of each TODO region it fills in
    tests: tuple[str, ...]        # the test functions that check it, by name

    @property
    def name(self) -> str:
        """What --grade-task takes: lab1.2."""
        return f"{self.lab}.{self.number}"


TASKS = (
    Task("lab1", 1, "Connect, handshake and log in", (
        "lab1_tcp/client.py::ChatClient.connect",
        "lab1_tcp/client.py::ChatClient.on_connected",
        "lab1_tcp/client.py::ChatClient.on_readable",
        "lab1_tcp/server.py::ChatServer.on_readable",
    ), (
        "test_help_explains_every_option",
        "test_mistyped_port_names_the_flag",
        "test_parse_args_reads_the_argv_it_is_given",
        "test_wrong_password_is_refused_and_nothing_is_delivered",
        "test_wrong_key_fails_the_handshake_with_a_clear_message",
        "test_client_without_a_server_says_so_and_fails",
        "test_client_names_every_address_it_tried_when_none_answers",
        "test_a_login_and_close_loop_leaves_no_password_checks_queued_behind_it",
        "test_client_is_told_when_the_server_quits",
        "test_lab1_refused_connect_is_named_in_words_under_windows_simulation",
        "test_lab1_server_that_cannot_open_its_database_says_which_file_and_why",
    )),
    Task("lab1", 2, "Chat both ways", (
        "lab1_tcp/client.py::ChatClient.on_submit",
        "lab1_tcp/server.py::ChatServer.handle_chat",
        "lab1_tcp/server.py::ChatServer.on_submit",
    ), (
        "test_messages_are_delivered_both_ways_verbatim",
        "test_ctrl_x_byte_sends_the_line_before_it_and_quits",
        "test_next_client_can_chat_after_the_first_one_quits",
        "test_second_client_is_told_the_server_is_busy_and_the_chat_goes_on",
        "test_client_tries_every_address_of_a_host_name",
        "test_server_on_ipv6_loopback_serves_a_client",
        "test_server_on_every_address_takes_ipv6_and_ipv4_clients",
        "test_records_split_into_bytes_or_merged_arrive_whole_and_in_order",
        "test_server_shows_the_logged_in_name_not_the_one_a_message_claims",
        "test_windows_send_on_enter_and_close_on_ctrl_x",
        "test_lab1_with_wire_shows_the_handshake_and_the_login_with_their_lengths",
        "test_lab1_client_quit_tells_the_server_it_left",
        "test_lab1_server_quit_tells_the_client_the_chat_ended",
        "test_lab1_refused_line_is_explained_and_the_chat_goes_on",
        "test_lab1_chat_between_two_hosts",
        "test_lab1_client_with_any_stdin_logs_in_then_leaves_at_its_end",
        "test_lab1_chat_and_the_end_of_stdin_under_windows_simulation",
        "test_lab1_client_with_stdin_at_its_end_under_windows_simulation",
        "test_lab1_ctrl_x_quits_under_windows_simulation",
        "test_lab1_quit_paths_under_windows_simulation",
        "test_lab1_roles_whose_stdout_fails_keep_chatting",
        "test_lab1_server_on_a_terminal_that_is_not_utf8_shows_every_line",
    )),
    Task("lab1", 3, "A server that strangers cannot stop", (), (
        "test_idle_connections_without_the_key_neither_keep_a_member_out_nor_stay_open",
        "test_a_flood_of_strangers_does_not_become_a_flood_of_notes",
        "test_a_login_finished_while_another_client_chats_is_told_busy_and_a_silent_member_is_dropped",
        "test_out_of_file_descriptors_the_server_says_so_once_and_recovers",
        "test_client_that_stops_reading_is_dropped_once_too_much_is_unsent",
        "test_client_vanishing_mid_record_does_not_stop_the_server",
        "test_garbage_never_stops_the_server_nor_the_chat",
        "test_a_replayed_first_handshake_record_is_closed_unanswered",
        "test_strangers_holding_connections_from_eight_addresses_do_not_keep_new_chats_out",
        "test_a_genuine_line_read_together_with_a_tampered_record_is_shown_then_the_peer_is_dropped",
    )),
    Task("lab2", 1, "Join the room: sessions, logins and the room key", (
        "lab2_udp/server.py::RoomServer.on_peer_ready",
        "lab2_udp/server.py::RoomServer.carry_out",
        "lab2_udp/client.py::RoomClient.on_readable",
    ), (
        "test_a_client_that_fails_ends_with_its_reason_not_a_transcript",
        "test_an_account_made_in_lab1_registers_in_lab2_as_the_handout_says",
        "test_failed_logins_from_another_address_do_not_lock_a_member_out",
        "test_one_address_cannot_fill_the_room",
        "test_strangers_from_many_addresses_do_not_close_a_login_in_progress",
        "test_eight_flooding_addresses_do_not_make_the_server_too_busy_for_an_honest_login",
        "test_a_login_flood_from_one_address_neither_queues_without_end_nor_keeps_members_waiting",
        "test_a_member_with_a_huge_ignore_list_in_the_database_can_still_log_in",
        "test_one_address_cannot_register_accounts_without_end",
        "test_strangers_holding_idle_connections_do_not_lock_members_out",
        "test_a_server_that_cannot_open_its_database_says_which_file_and_why",
    )),
    Task("lab2", 2, "The room: one sealed datagram per batch, opened in order, repaired over TCP", (
        "lab2_udp/server.py::RoomServer.broadcast",
        "lab2_udp/client.py::RoomClient.on_datagrams",
        "lab2_udp/client.py::RoomClient.open_datagram",
        "lab2_udp/client.py::RoomClient.tick",
    ), (
        "test_logins_abandoned_while_their_passwords_are_checked_leave_the_queue_working",
        "test_server_quits_cleanly_while_a_connection_is_in_its_handshake",
        "test_a_member_renames_and_every_screen_follows_the_account",
        "test_a_mistyped_command_is_refused_not_said_to_the_room",
        "test_a_server_on_the_ipv6_loopback_serves_the_room",
        "test_breaking_a_limit_gets_a_clear_error_to_that_client_only",
        "test_dm_reaches_only_its_recipient",
        "test_five_clients_and_the_server_show_the_same_transcript",
        "test_ignore_survives_a_server_restart",
        "test_an_ignored_member_s_lines_in_a_row_are_one_growing_line_on_the_ignoring_screen",
        "test_late_joiner_gets_the_same_transcript",
        "test_late_joiner_of_a_long_room_gets_all_of_it_in_pieces",
        "test_a_late_joiner_past_the_servers_window_is_told_what_is_not_kept_and_has_the_same_hash",
        "test_lines_piped_in_before_the_login_are_sent_not_lost",
        "test_own_message_appears_only_when_numbered_by_the_server",
        "test_server_rename_is_seen_by_the_room",
        "test_the_server_warns_when_the_broadcast_address_is_no_broadcast_address",
        "test_on_linux_loopback_the_server_broadcasts_the_room_and_says_why",
        "test_a_multicast_room_names_its_group_at_login_and_members_hear_it_by_datagram",
        "test_lab2_client_quit_is_seen_as_a_leave_and_ends_with_its_hash",
        "test_lab2_server_quit_says_goodbye_to_every_client",
        "test_lab2_lines_piped_before_the_login_under_windows_simulation",
        "test_lab2_password_from_a_pipe_under_windows_simulation",
        "test_lab2_server_quit_under_windows_simulation",
        "test_lab2_server_whose_stdout_fails_keeps_the_room_and_rekeys_after_a_leave",
        "test_lab2_member_on_a_terminal_that_is_not_utf8_shows_every_event_and_hashes_the_real_text",
    )),
    Task("lab2", 3, "The room through loss, deafness and slow logins, on a LAN and in windows", (), (
        "test_a_slow_password_check_does_not_stall_the_room",
        "test_transcripts_match_through_a_lossy_network",
        "test_a_member_that_hears_no_broadcast_follows_the_room_over_tcp_and_says_why",
        "test_room_windows_send_on_enter_and_a_client_leaves_on_ctrl_x",
        "test_window_keeps_a_refused_line_selected_for_the_user_to_fix",
        "test_lab2_room_broadcast_on_a_lan_reaches_three_hosts_identically",
        "test_lab2_room_multicast_on_a_lan_reaches_three_hosts_identically",
        "test_lab2_room_multicast_on_loopback",
        "test_lab2_room_stays_identical_with_loss_on_one_hosts_cable",
        "test_lab2_window_quits_on_a_signal_as_on_ctrl_x",
        "test_lab2_client_with_wire_marks_a_gap_its_repair_a_duplicate_and_a_forgery",
        "test_lab2_one_machine_room_where_loopback_cannot_broadcast_goes_multicast_by_datagram",
        "test_lab2_window_on_a_mac_quits_on_cmd_q_with_its_goodbye",
    )),
    Task("lab2", 4, "A room that no member or stranger can break", (), (
        "test_flooding_client_alone_is_told_to_slow_down",
        "test_garbage_and_a_client_vanishing_mid_record_do_not_stop_the_server",
        "test_forged_replayed_and_garbage_datagrams_change_nothing",
        "test_a_dm_to_a_very_long_name_is_answered_not_punished",
        "test_a_member_cannot_take_the_servers_name_once_the_server_renames",
        "test_a_name_taken_before_its_account_existed_goes_back_and_its_owner_gets_in_and_gets_its_dms",
        "test_a_name_registered_in_lab1_while_a_member_shows_it_in_the_room_is_given_back",
        "test_a_stranger_replaying_a_genuine_datagram_does_not_become_the_server_for_a_new_client",
        "test_blank_looking_padding_cannot_push_a_fake_line_onto_its_own_row",
        "test_members_that_stop_reading_are_dropped_without_freezing_the_room",
        "test_odd_requests_and_abandoned_logins_neither_crash_the_server_nor_stop_the_room",
        "test_a_member_flooding_requests_is_told_once_a_second_then_dropped",
        "test_forged_datagrams_from_a_member_cost_the_receivers_next_to_nothing",
        "test_hundreds_of_members_leaving_at_once_do_not_stop_the_server",
        "test_ignoring_a_name_answers_the_same_whether_or_not_it_has_an_account",
        "test_text_that_could_pose_as_another_line_is_refused_by_client_and_server",
        "test_a_database_another_program_holds_locked_does_not_stop_the_room",
        "test_a_genuine_message_read_together_with_a_tampered_record_is_said_then_the_peer_is_dropped",
        "test_a_replayed_first_handshake_record_gets_no_handshake",
        "test_forged_first_records_from_one_address_are_refused_past_a_burst_and_members_still_log_in",
        "test_strangers_reopening_from_200_addresses_never_evict_a_client_that_proved_the_key",
        "test_a_leave_storm_neither_rekeys_the_room_past_its_members_nor_slows_them_much",
        "test_lab2_oversize_datagram_is_rejected_not_raised_under_windows_simulation",
        "test_a_kicked_member_is_told_why_and_the_room_sees_the_reason",
        "test_a_muted_member_is_refused_until_unmuted_and_the_room_sees_both",
        "test_a_banned_address_is_dropped_and_refused_at_the_door_while_others_join",
        "test_a_silent_member_is_removed_after_the_idle_limit_and_one_that_keeps_alive_is_not",
        "test_one_student_filling_the_room_from_three_addresses_is_banned_and_honest_logins_get_in_again",
    )),
)
TASK_OF_TEST = {test: task.name for task in TASKS for test in task.tests}
TASK_OF_REGION = {region: task.name for task in TASKS for region in task.regions}
